"""Queue entries: what a task's stream entry names and carries (pure).

A queue shard is one Redis stream; an entry's `t` field names the task and its record adds
only the trace context (`tp`) of the submitter. Dead letters use the same encoding with the
reason beside it. The entry id is the stream id, so it also tells when the entry was added.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from agentmesh.kit.errors import DataLoss
from memory import codec
from memory.codec import RecordKind

log = logging.getLogger(__name__)

ENTRY_FORMAT = 1


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A stream entry that names a task."""

    shard: int
    entry_id: str
    task_id: str
    carrier: dict[str, str]
    enqueued_ms: int
    raw: bytes


def encode_entry(payload: dict[str, Any]) -> bytes:
    return codec.encode(
        RecordKind.QUEUE_ENTRY, ENTRY_FORMAT, json.dumps(payload, separators=(",", ":")).encode()
    )


def decode_entry_payload(data: bytes | None, what: str, *, needs_task: bool = True) -> dict[str, Any]:
    """A queue entry's (or dead letter's) payload; DataLoss for foreign or corrupt data."""
    _, payload = codec.decode(data, RecordKind.QUEUE_ENTRY, {ENTRY_FORMAT}, what)
    try:
        decoded = json.loads(payload)
    except ValueError:
        raise DataLoss(f"{what}: queue entry is not JSON") from None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("t", ""), str):
        raise DataLoss(f"{what}: queue entry is malformed")
    if needs_task and not decoded.get("t"):
        raise DataLoss(f"{what}: queue entry names no task")
    return decoded


_PLAIN_ENTRY = encode_entry({"tp": {}})  # the record of an entry without trace context


def entry_record(carrier: dict[str, str]) -> bytes:
    """The record of a new queue entry: its trace context. (The entry's `t` field names the task,
    its id tells when it was added.)"""
    return encode_entry({"tp": carrier}) if carrier else _PLAIN_ENTRY


def queue_entry(shard: int, entry_id: str, task_id: str, record: bytes) -> QueueEntry:
    """A queue entry of a task. Its record only adds the trace context and the enqueue time, so an
    unreadable record does not stop the task (scripts find the task from the entry's `t`)."""
    carrier: dict[str, str] = {}
    if record != _PLAIN_ENTRY:
        try:
            payload = decode_entry_payload(record, f"queue entry {entry_id}", needs_task=False)
            carrier = payload["tp"] if isinstance(payload.get("tp"), dict) else {}
        except (DataLoss, ValueError, TypeError):
            log.warning(
                "queue entry record unreadable; its task runs without it", extra={"entry_id": entry_id}
            )
    return QueueEntry(shard, entry_id, task_id, carrier, stream_id_key(entry_id)[0], record)


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A Redis stream id (`<ms>-<seq>`, of an entry or an event) as a sortable pair; empty is (0, 0)."""
    millis, _, seq = stream_id.partition("-")
    return int(millis or 0), int(seq or 0)

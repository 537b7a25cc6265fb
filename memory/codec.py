"""Versioned record encoding for everything stored in Redis.

A stored record is `AM` + one byte `RecordKind` + one byte format version + payload
(usually a serialized protobuf message). Readers accept the current and the
previous version of each kind, so a rolling upgrade never strands a record
(DESIGN.md, "Upgrades"). Data under our keys that does not carry this header
is foreign or corrupt: `decode` raises DataLoss instead of crashing.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from agentmesh.kit.errors import DataLoss

MAGIC = b"AM"
M = TypeVar("M", bound=Message)


class RecordKind(enum.IntEnum):
    """Record kinds; never renumber (they are on disk)."""

    TASK = 1
    STEP = 2
    SESSION_TURN = 3
    SESSION_META = 4
    FACT = 5
    IDEMPOTENT_RESULT = 6
    TOOL_SPEC = 7
    AGENT_CARD = 8
    QUEUE_ENTRY = 9
    REGISTRY_CHANGE = 10
    # 20-29: the task layer (memory/tasks/store.py and friends).
    TASK_EVENT = 20
    RESUMPTION = 21
    PENDING_ACTION = 22


def encode(kind: RecordKind, version: int, payload: bytes) -> bytes:
    if not 0 < version < 256:
        raise ValueError("format version must be 1..255")
    return MAGIC + bytes((kind, version)) + payload


def as_bytes(value: object) -> bytes | None:
    """A Redis reply as bytes (clients here never decode responses; typing says they might)."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def as_text(value: object) -> str:
    """A Redis reply as str (None, a missing value, is empty)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def decode(data: bytes | None, kind: RecordKind, accepted: Collection[int], what: str) -> tuple[int, bytes]:
    """(version, payload); DataLoss if `data` is not a record of `kind` in an accepted version."""
    if data is None:
        raise DataLoss(f"{what}: record missing")
    if len(data) < 4 or data[:2] != MAGIC:
        raise DataLoss(f"{what}: not an agentmesh record (foreign or corrupt data)")
    if data[2] != kind:
        raise DataLoss(f"{what}: expected a {kind.name} record, found kind {data[2]}")
    version = data[3]
    if version not in accepted:
        raise DataLoss(
            f"{what}: {kind.name} format version {version} is not readable by this release "
            f"(reads {sorted(accepted)}); upgrade this replica"
        )
    return version, data[4:]


def encode_message(kind: RecordKind, version: int, message: Message) -> bytes:
    return encode(kind, version, message.SerializeToString(deterministic=True))


def decode_message(
    data: bytes | None, kind: RecordKind, accepted: Collection[int], message_type: type[M], what: str
) -> M:
    _, payload = decode(data, kind, accepted, what)
    try:
        return message_type.FromString(payload)
    except DecodeError as exc:
        raise DataLoss(f"{what}: {kind.name} record is corrupt ({exc})") from exc

"""Task ids (pure): a UUID whose last byte names the queue shard the task lives in.

A task's keys share the slot of its queue shard (memory/keys.py), so finding a
task needs its shard. Deriving the shard from the id with the configured shard
count would move every task the day AGENTMESH_QUEUE_SHARDS changes (GetTask of
a retained task would answer NOT_FOUND). Instead the shard is chosen once, at
creation, and written into the id's last byte: a task is found where it was
created, whatever the shard count is today. The id stays a valid RFC 4122 UUID
string (version and variant bits untouched); 120 random or hashed bits remain.

Ids named by a request id stay deterministic (UUIDv5 over tenant, owner,
domain and request id, then the shard byte), which makes SubmitTask idempotent
without a second key. The shard is a hash of that UUID modulo the shard count,
so a retry of the same request after the count changed may name another
shard, i.e. another id (docs/decisions.md, "Durable tasks", changing the shard
count).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import uuid

MAX_SHARDS = 256  # one byte
_NAMESPACE = uuid.UUID("8f0e4a4e-6a43-4c1c-9a53-3f6f3d0c2b71")
_NAMESPACE_BYTES = _NAMESPACE.bytes
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def for_request(tenant: str, owner: str, domain: str, request_id: str, *, shards: int) -> str:
    """The id a request id names: the same (tenant, owner, domain, request id) and shard count give
    the same id."""
    name = f"{len(tenant)}:{tenant}{len(owner)}:{owner}{len(domain)}:{domain}{len(request_id)}:{request_id}"
    # uuid.uuid5, without building UUID objects (this runs on every submit)
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    return _placed(raw, shards)


def random_id(*, shards: int) -> str:
    """A fresh id (a Run without a request id): a UUIDv4 with the shard byte."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return _placed(raw, shards)


@functools.lru_cache(maxsize=8192)  # looked up several times per operation on a task
def shard_of(task_id: str) -> int | None:
    """The shard a task id names; None if it is not a task id (no task can have it)."""
    if len(task_id) != 36 or not _ID.fullmatch(task_id):
        return None
    return int(task_id[34:], 16)


def _placed(raw: bytearray, shards: int) -> str:
    """The UUID string of `raw` with its last byte replaced by a shard picked from its first four."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"the shard count must be 1..{MAX_SHARDS}, not {shards}")
    raw[15] = int.from_bytes(raw[:4], "big") % shards
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

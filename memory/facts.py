"""Long-term facts per user: key/value with provenance and a lifetime.

    facts = FactStore(redis, default_ttl_s=settings.fact_ttl_s)
    await facts.put("acme", "u-1", "preferred_carrier", "DHL", task_id="t-9", step=3)
    [fact] = await facts.list("acme", "u-1")

A fact records which task and step wrote it (`task_id`, `step`) and when it
expires. *Pinned* facts (the default) go into every context packet of the
user's sessions, newest first, within the packet's facts share.

Storage (`{u:<tenant>:<user>}`): a hash key -> versioned FACT record and a
sorted set key -> expiry (ms, +inf = never). Writes are one Lua script: prune
expired facts, enforce `max_facts`, write, and set the keys' TTL to the latest
expiry, so a user's facts vanish on their own when the last one expires.
Readers also filter by the expiry inside each record, so an expired fact is
never returned even before it is pruned.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentmesh.kit.config import Settings
from agentmesh.kit.errors import DataLoss, ResourceExhausted
from agentmesh.kit.validation import Violations
from agentmesh.v1 import errors_pb2
from memory import codec, keys
from memory.codec import RecordKind
from memory.connection import AnyRedis, redis_errors
from memory.identity import check_owner, require_owner

FORMAT_VERSION = 1
READABLE_VERSIONS = frozenset({1})
DEFAULT_TTL_S = 90 * 24 * 3600.0
DEFAULT_MAX_FACTS = 256
MAX_VALUE_BYTES = 4096
FACT_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

_PUT = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREM', KEYS[2], unpack(expired))
end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] == 'inf' then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIREAT', KEYS[1], last[2])
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
return #expired
"""


@dataclass(frozen=True, slots=True)
class Fact:
    """One fact of a user. `expires_at` is epoch seconds (None = never); `task_id`/`step` say who wrote it."""

    key: str
    value: str
    task_id: str = ""
    step: int = -1
    updated_at: float = 0.0
    expires_at: float | None = None
    pinned: bool = True

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def encode_fact(fact: Fact) -> bytes:
    body: dict[str, Any] = {"k": fact.key, "v": fact.value, "u": fact.updated_at, "p": fact.pinned}
    if fact.task_id:
        body["t"] = fact.task_id
    if fact.step >= 0:
        body["s"] = fact.step
    if fact.expires_at is not None:
        body["x"] = fact.expires_at
    return codec.encode(RecordKind.FACT, FORMAT_VERSION, json.dumps(body, separators=(",", ":")).encode())


def decode_fact(data: object, what: str = "fact") -> Fact:
    _, payload = codec.decode(codec.as_bytes(data), RecordKind.FACT, READABLE_VERSIONS, what)
    try:
        body = json.loads(payload)
        return Fact(
            key=body["k"],
            value=body["v"],
            task_id=body.get("t", ""),
            step=int(body.get("s", -1)),
            updated_at=float(body.get("u", 0.0)),
            expires_at=None if body.get("x") is None else float(body["x"]),
            pinned=bool(body.get("p", True)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DataLoss(f"{what}: FACT record is corrupt ({exc})") from exc


def live_facts(raw: Mapping[Any, Any], now: float, what: str) -> list[Fact]:
    """Decode a facts hash, leaving out expired facts; sorted by key."""
    facts = [decode_fact(value, f"{what} {name!r}") for name, value in raw.items()]
    return sorted((f for f in facts if not f.expired(now)), key=lambda f: f.key)


def packet_facts(facts: list[Fact]) -> list[tuple[str, str]]:
    """Pinned facts for a context packet, most recently written first."""
    pinned = sorted((f for f in facts if f.pinned), key=lambda f: (-f.updated_at, f.key))
    return [(f.key, f.value) for f in pinned]


class FactStore:
    def __init__(
        self,
        redis: AnyRedis,
        *,
        default_ttl_s: float = DEFAULT_TTL_S,
        max_facts: int = DEFAULT_MAX_FACTS,
    ) -> None:
        if default_ttl_s < 0 or max_facts < 1:
            raise ValueError("default_ttl_s must be >= 0 (0 = never) and max_facts >= 1")
        self._redis = redis
        self.default_ttl_s = default_ttl_s
        self.max_facts = max_facts
        self._put = redis.register_script(_PUT)

    @classmethod
    def from_settings(cls, redis: AnyRedis, settings: Settings) -> FactStore:
        """AGENTMESH_FACT_TTL as the default lifetime."""
        return cls(redis, default_ttl_s=settings.fact_ttl_s)

    async def put(
        self,
        tenant: str,
        user: str,
        key: str,
        value: str,
        *,
        task_id: str = "",
        step: int = -1,
        ttl_s: float | None = None,
        pinned: bool = True,
    ) -> Fact:
        """Write (or overwrite) a fact. `ttl_s`: None = the store's default, 0 = never expires.

        RESOURCE_EXHAUSTED (BUDGET_EXHAUSTED) when the user already holds
        `max_facts` other facts.
        """
        violations = Violations()
        check_owner(violations, tenant=tenant, user=user)
        if violations.required(key, "key"):
            violations.matches(key, FACT_KEY, "key", "fact key")
        violations.max_length(value, MAX_VALUE_BYTES, "value")
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        violations.in_range(ttl, "ttl_s", low=0)
        if task_id:
            check_owner(violations, tenant=tenant, user=user, task_id=task_id)
        violations.raise_if_any("invalid fact")
        now = time.time()
        expires_at = now + ttl if ttl > 0 else None
        fact = Fact(key, value, task_id, step, now, expires_at, pinned)
        score = "+inf" if expires_at is None else str(math.ceil(expires_at * 1000))
        with redis_errors(f"writing fact {key!r}"):
            answer = await self._put(
                keys=[keys.user_facts(tenant, user), keys.user_fact_expiry(tenant, user)],
                args=[int(now * 1000), key, encode_fact(fact), score, self.max_facts],
            )
        if int(answer) < 0:
            raise ResourceExhausted(
                f"user already has {self.max_facts} facts; delete one or let some expire",
                reason=errors_pb2.ERROR_REASON_BUDGET_EXHAUSTED,
                metadata={"limit": "facts_per_user", "max": str(self.max_facts)},
            )
        return fact

    async def get(self, tenant: str, user: str, key: str) -> Fact | None:
        require_owner(tenant=tenant, user=user)
        with redis_errors(f"reading fact {key!r}"):
            data = await self._redis.hget(keys.user_facts(tenant, user), key)
        if data is None:
            return None
        fact = decode_fact(data, f"fact {key!r}")
        return None if fact.expired(time.time()) else fact

    async def list(self, tenant: str, user: str) -> list[Fact]:
        """The user's facts that have not expired, sorted by key."""
        require_owner(tenant=tenant, user=user)
        with redis_errors("reading facts"):
            raw = await self._redis.hgetall(keys.user_facts(tenant, user))
        return live_facts(raw, time.time(), "fact")

    async def delete(self, tenant: str, user: str, key: str) -> bool:
        require_owner(tenant=tenant, user=user)
        with redis_errors(f"deleting fact {key!r}"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.user_facts(tenant, user), key)
                pipe.zrem(keys.user_fact_expiry(tenant, user), key)
                removed, _ = await pipe.execute()
        return bool(removed)

    async def clear(self, tenant: str, user: str) -> int:
        """Delete all of a user's facts; returns how many there were (expired ones included)."""
        require_owner(tenant=tenant, user=user)
        facts_key = keys.user_facts(tenant, user)
        with redis_errors("clearing facts"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hlen(facts_key)
                pipe.delete(facts_key, keys.user_fact_expiry(tenant, user))
                count, _ = await pipe.execute()
        return int(count)

"""Idempotency keys: the first caller wins, repeats get the stored result.

    store = IdempotencyStore(redis, scope="tool:payments_refund")
    result = await store.run(key, request_bytes, call_the_side_effect)

Semantics (one Lua script per step, so they hold across replicas):

- first `begin` with a key claims it (state *pending*, with a lease);
- `complete` stores the result; later callers with the same key **and the
  same payload** get it back (`Replay`) without running anything;
- the same key with a **different payload** is INVALID_ARGUMENT
  (IDEMPOTENCY_KEY_REUSED): a key names one request, never two;
- while the first caller is still running, others get ABORTED with RetryInfo
  (nothing ran; retry shortly);
- if the first caller fails with a retryable error it `release`s the key so a
  retry can run; if it dies, the lease expires and the next caller claims it;
- completed keys expire after the window (24 h by default;
  AGENTMESH_IDEMPOTENCY_WINDOW through `from_settings`);
- a record in a format this release cannot read (or foreign data under the
  key) is DATA_LOSS, never silently overwritten.

The record is one hash under `memory.keys.idempotency(scope, key)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentmesh.kit.config import Settings
from agentmesh.kit.errors import Aborted, DataLoss, InvalidArgument
from agentmesh.v1 import errors_pb2
from memory import keys
from memory.connection import AnyRedis, redis_errors

log = logging.getLogger(__name__)

FORMAT_VERSION = b"1"
# Record formats this release reads (DESIGN.md, "Upgrades": current and previous).
READABLE_VERSIONS = frozenset({b"1"})
DEFAULT_WINDOW_S = 24 * 3600.0
DEFAULT_LEASE_S = 30.0

_BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {'foreign', ''} end
  redis.call('HSET', KEYS[1], 'v', ARGV[4], 'state', 'pending', 'fp', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'claimed'}
end
local version = redis.call('HGET', KEYS[1], 'v') or ''
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then
  return {'conflict', version}
end
if state == 'pending' then
  -- This very claim, sent again after its reply was lost (the client retries a reset connection
  -- with the same token): it is the caller's own, not someone else's call in flight.
  if redis.call('HGET', KEYS[1], 'token') == ARGV[2] then return {'claimed'} end
  return {'in_flight', version, tostring(redis.call('PTTL', KEYS[1]))}
end
return {'done', version, redis.call('HGET', KEYS[1], 'result') or ''}
"""

_COMPLETE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'result', ARGV[2])
redis.call('HDEL', KEYS[1], 'token')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

_EXTEND = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """This caller holds the key: run the side effect, then `complete` (or `release`)."""

    key: str
    token: str


@dataclass(frozen=True, slots=True)
class Replay:
    """An earlier identical call finished: here is its stored result."""

    result: bytes


def fingerprint(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


class IdempotencyStore:
    def __init__(
        self,
        redis: AnyRedis,
        *,
        scope: str,
        window_s: float = DEFAULT_WINDOW_S,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        if lease_s <= 0 or window_s <= 0:
            raise ValueError("lease and window must be positive")
        self._redis = redis
        self.scope = scope
        self.window_ms = int(window_s * 1000)
        self.lease_ms = int(lease_s * 1000)
        self._begin = redis.register_script(_BEGIN)
        self._complete = redis.register_script(_COMPLETE)
        self._release = redis.register_script(_RELEASE)
        self._extend = redis.register_script(_EXTEND)

    @classmethod
    def from_settings(
        cls, redis: AnyRedis, settings: Settings, *, scope: str, lease_s: float = DEFAULT_LEASE_S
    ) -> IdempotencyStore:
        """A store whose window is AGENTMESH_IDEMPOTENCY_WINDOW."""
        return cls(redis, scope=scope, window_s=settings.idempotency_window_s, lease_s=lease_s)

    def _key(self, key: str) -> str:
        return keys.idempotency(self.scope, key)

    async def begin(self, key: str, payload: bytes) -> Claimed | Replay:
        """Claim `key` for this payload, or get the stored result; raises on conflict or in-flight."""
        redis_key = self._key(key)
        token = uuid.uuid4().hex
        with redis_errors(f"checking idempotency key {key!r}"):
            answer = await self._begin(
                keys=[redis_key], args=[fingerprint(payload), token, self.lease_ms, FORMAT_VERSION]
            )
        outcome = _text(answer[0])
        if outcome == "claimed":
            return Claimed(redis_key, token)
        version = bytes(answer[1]) if not isinstance(answer[1], str) else answer[1].encode()
        if outcome == "foreign" or version not in READABLE_VERSIONS:
            raise DataLoss(
                f"idempotency key {key!r}: the stored record is not readable by this release "
                f"(format {version.decode(errors='replace') or 'unknown'}; reads "
                f"{sorted(v.decode() for v in READABLE_VERSIONS)})",
                metadata={"idempotency_key": key, "scope": self.scope},
            )
        if outcome == "done":
            return Replay(bytes(answer[2]))
        if outcome == "conflict":
            raise InvalidArgument(
                f"idempotency key {key!r} was already used for a different request",
                reason=errors_pb2.ERROR_REASON_IDEMPOTENCY_KEY_REUSED,
                metadata={"idempotency_key": key, "scope": self.scope},
            )
        remaining_ms = int(_text(answer[2]))
        raise Aborted(
            f"a request with idempotency key {key!r} is still in flight; retry shortly",
            reason=errors_pb2.ERROR_REASON_IN_FLIGHT,
            metadata={"idempotency_key": key, "scope": self.scope},
            retry_after=min(1.0, max(0.05, remaining_ms / 1000)),
        )

    async def complete(self, claim: Claimed, result: bytes) -> bool:
        """Store the result; False when the claim was lost (lease expired and someone else took over)."""
        with redis_errors("storing an idempotent result"):
            stored = await self._complete(keys=[claim.key], args=[claim.token, result, self.window_ms])
        if not stored:
            log.warning("idempotency claim lost before completion", extra={"idempotency_key": claim.key})
        return bool(stored)

    async def release(self, claim: Claimed) -> None:
        """Forget the claim so a retry can run (the attempt failed without effect)."""
        with redis_errors("releasing an idempotency key"):
            await self._release(keys=[claim.key], args=[claim.token])

    async def extend(self, claim: Claimed) -> bool:
        """Renew the lease of a long-running claim."""
        with redis_errors("extending an idempotency lease"):
            return bool(await self._extend(keys=[claim.key], args=[claim.token, self.lease_ms]))

    async def run(self, key: str, payload: bytes, work: Callable[[], Awaitable[bytes]]) -> bytes:
        """Run `work` at most once per (key, payload); repeats return the stored result.

        If `work` raises, the key is released and the exception propagates, so a
        retry with the same key runs it again.
        """
        claim = await self.begin(key, payload)
        if isinstance(claim, Replay):
            return claim.result
        keeper = asyncio.create_task(self._keep_alive(claim))
        try:
            result = await work()
        except BaseException:
            keeper.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.release(claim))
            raise
        keeper.cancel()
        await self.complete(claim, result)
        return result

    async def _keep_alive(self, claim: Claimed) -> None:
        interval = self.lease_ms / 3000
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(interval)
                if not await self.extend(claim):
                    return


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

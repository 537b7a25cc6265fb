"""A leader lease in Redis: exactly one registry replica runs discovery at a time.

`SET key holder NX PX ttl` takes it; renewal and release are scripts that act
only while the key still names the holder, so a replica that stalled past the
TTL cannot extend or drop a lease another replica took meanwhile. Renewed
every third of the TTL; a holder that cannot renew stops its work before the
TTL runs out (`LeaderLease.hold`), so two leaders never overlap by more than
the clock skew between replicas' monotonic timers and Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from memory import keys
from memory.connection import AnyRedis

log = logging.getLogger(__name__)

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLease:
    def __init__(self, redis: AnyRedis, name: str, *, ttl_s: float = 15.0, holder: str | None = None) -> None:
        self.redis = redis
        self.key = keys.leader_lease(name)
        self.ttl_ms = int(ttl_s * 1000)
        self.holder = holder or uuid.uuid4().hex
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    async def acquire(self) -> bool:
        return bool(await self.redis.set(self.key, self.holder, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        return bool(await self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.holder])

    async def holder_now(self) -> str | None:
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    async def hold(self, work: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
        """Wait for the lease, run `work` while it is held, stop it when the lease is lost or on `stop`."""
        period = self.ttl_ms / 3000
        while not stop.is_set():
            try:
                acquired = await self.acquire()
            except RedisError as exc:
                log.warning("discovery lease: Redis unavailable (%s)", exc)
                acquired = False
            if not acquired:
                await _wait(stop, period)
                continue
            log.info("discovery lease acquired", extra={"holder": self.holder})
            task = asyncio.create_task(work(), name=f"lease-{self.key}")
            try:
                await self._keep(task, stop, period)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                try:
                    await self.release()
                except RedisError:
                    pass  # it expires by itself
                log.info("discovery lease released", extra={"holder": self.holder})

    async def _keep(self, task: asyncio.Task[None], stop: asyncio.Event, period: float) -> None:
        renewed = time.monotonic()
        while not stop.is_set() and not task.done():
            await _wait(stop, period, task)
            if stop.is_set() or task.done():
                return
            try:
                if not await self.renew():
                    log.warning("discovery lease lost to another replica")
                    return
                renewed = time.monotonic()
            except RedisError as exc:
                # Keep working only while the lease we hold is surely still ours.
                if time.monotonic() - renewed > (self.ttl_ms / 1000) - period:
                    log.warning("discovery lease could not be renewed in time (%s): stepping down", exc)
                    return


async def _wait(stop: asyncio.Event, seconds: float, task: asyncio.Task[None] | None = None) -> None:
    waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
    if task is not None:
        waiters.append(task)  # type: ignore[arg-type]
    _, pending = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        if waiter is not task:
            waiter.cancel()

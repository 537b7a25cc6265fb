"""Races on one idempotency key from a separate process (used by the concurrency test).

    python -m tests.support.idempotency_racer REDIS_URL KEY COROUTINES
prints one line per coroutine: the result it got back.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agentmesh.kit.errors import Aborted
from memory.connection import create_redis
from memory.idempotency import IdempotencyStore


async def race(url: str, key: str, coroutines: int) -> list[bytes]:
    redis = create_redis(url)
    store = IdempotencyStore(redis, scope="race", lease_s=10)

    async def side_effect() -> bytes:
        count = await redis.incr("race:executions")
        await asyncio.sleep(0.05)  # long enough that the others arrive while it is in flight
        return f"executed-by-{os.getpid()}-#{count}".encode()

    async def one() -> bytes:
        while True:
            try:
                return await store.run(key, b"same payload", side_effect)
            except Aborted as exc:  # in flight elsewhere: retry after the hinted delay
                await asyncio.sleep(exc.retry_after or 0.05)

    results = await asyncio.gather(*(one() for _ in range(coroutines)))
    await redis.aclose()
    return results


if __name__ == "__main__":
    url, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for result in asyncio.run(race(url, key, count)):
        print(result.decode())

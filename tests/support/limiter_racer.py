"""Hammers one rate-limit bucket from a separate process (used by the two-process limiter test).

    python -m tests.support.limiter_racer REDIS_URL START_AT SECONDS RATE BURST
waits until START_AT (epoch seconds), then checks the bucket as fast as it can
for SECONDS and prints one line: `admitted denied first_attempt last_attempt`.
"""

from __future__ import annotations

import asyncio
import sys
import time

from agentmesh.kit.config import RateSpec
from memory.connection import create_redis
from memory.rate_limits import Limit, RateLimiter


async def race(
    url: str, start_at: float, seconds: float, rate: float, burst: int
) -> tuple[int, int, float, float]:
    redis = create_redis(url)
    limiter = RateLimiter(redis)
    limits = [
        Limit.tenant("race", RateSpec(rate, burst)),
        Limit.user("race", "u", RateSpec(rate * 10, burst * 10)),
    ]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    admitted = denied = 0
    first = time.time()
    last = first
    while time.time() < first + seconds:
        last = time.time()
        decision = await limiter.check(limits)
        if decision.allowed:
            admitted += 1
        else:
            denied += 1
    await redis.aclose()
    return admitted, denied, first, last


if __name__ == "__main__":
    url, start_at, seconds, rate, burst = sys.argv[1:6]
    result = asyncio.run(race(url, float(start_at), float(seconds), float(rate), int(burst)))
    print(*result)

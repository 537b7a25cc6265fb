"""RateLimiter against a real server, and across two processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agentmesh.kit import metrics
from agentmesh.kit.config import RateSpec
from agentmesh.kit.errors import ResourceExhausted
from agentmesh.v1 import tool_options_pb2 as opts
from memory import keys
from memory.connection import create_redis
from memory.rate_limits import Limit, LimitScope, RateLimiter

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = create_redis(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
def limiter(client: aioredis.Redis) -> RateLimiter:
    return RateLimiter(client)


# Time in these tests: the buckets refill at 0.01 token/s, so a stall of the machine between two
# calls (seconds, on a loaded 2-core box) moves no assertion; time that must pass is made to pass
# by moving the bucket's stamp into the past (`_let_pass`), the one clock the script reads besides
# the server's TIME. No test sleeps for a refill.
SLOW = 0.01  # tokens per second: 100 s per token


async def _let_pass(client: aioredis.Redis, key: str, seconds: float) -> None:
    """As if `seconds` had passed since the bucket was last touched (its stamp moves back)."""
    stamp = int(await client.hget(key, "ts"))
    await client.hset(key, "ts", str(stamp - round(seconds * 1000)))


async def test_burst_then_refusal_with_the_wait(limiter: RateLimiter, client: aioredis.Redis) -> None:
    limit = Limit.user("acme", "u1", RateSpec(per_second=SLOW, burst=3))
    for left in (2, 1, 0):
        decision = await limiter.check([limit])
        assert decision.allowed and decision.remaining == pytest.approx(left, abs=0.05)
    refused = await limiter.check([limit])
    assert not refused.allowed and refused.limit == limit
    assert 95 < refused.retry_after <= 100  # one token at 0.01/s
    ttl = await client.pttl(keys.rate_user("acme", "u1"))
    assert 290_000 < ttl <= 301_000  # expires once it would be full again (3 tokens, + 1 s)


async def test_tokens_come_back_with_time(limiter: RateLimiter, client: aioredis.Redis) -> None:
    limit = Limit.tenant("acme", RateSpec(per_second=SLOW, burst=1))
    assert (await limiter.check([limit])).allowed
    refused = await limiter.check([limit])
    assert not refused.allowed
    await _let_pass(client, limit.key, refused.retry_after - 10)  # 0.9 token: not yet
    assert not (await limiter.check([limit])).allowed
    await _let_pass(client, limit.key, 10)
    assert (await limiter.check([limit])).allowed


async def test_most_restrictive_wins_and_nothing_is_taken_on_refusal(limiter: RateLimiter) -> None:
    roomy = Limit.tenant("acme", RateSpec(per_second=SLOW, burst=10))
    tight = Limit.user("acme", "u1", RateSpec(per_second=SLOW / 2, burst=1))
    assert (await limiter.check([roomy, tight])).allowed
    refused = await limiter.check([roomy, tight])
    assert not refused.allowed and refused.limit == tight
    assert refused.retry_after > 150  # the tight bucket's 200 s, not the roomy one's 100 s
    # the refused call took nothing from the roomy bucket: 9 left
    for _ in range(9):
        assert (await limiter.check([roomy])).allowed
    assert not (await limiter.check([roomy])).allowed


async def test_shared_buckets_in_other_slots_are_all_or_nothing(limiter: RateLimiter) -> None:
    tenant = Limit.tenant("acme", RateSpec(per_second=SLOW, burst=5))
    shared = Limit.tool_calls(
        "payments_refund", RateSpec(per_second=SLOW, burst=1), scope=opts.RATE_LIMIT_SCOPE_GLOBAL
    )
    assert (await limiter.check([tenant, shared])).allowed
    refused = await limiter.check([tenant, shared])
    assert not refused.allowed and refused.limit == shared and refused.limit.scope is LimitScope.TOOL
    # the tenant's token taken before the shared bucket refused was given back: 4 left
    for _ in range(4):
        assert (await limiter.check([tenant])).allowed
    assert not (await limiter.check([tenant])).allowed


async def test_admit_raises_resource_exhausted_with_retry_info(limiter: RateLimiter) -> None:
    limit = Limit.domain("refunds", RateSpec(per_second=SLOW, burst=1))
    before = metrics.RATE_LIMITED.labels("domain", "")._value.get()
    await limiter.admit([limit])
    with pytest.raises(ResourceExhausted) as caught:
        await limiter.admit([limit])
    assert caught.value.reason == "RATE_LIMITED" and caught.value.metadata["limit"] == "domain:refunds"
    assert caught.value.retry_after is not None and 95 < caught.value.retry_after <= 100
    assert metrics.RATE_LIMITED.labels("domain", "")._value.get() == before + 1


async def test_acquire_waits_within_the_deadline(limiter: RateLimiter) -> None:
    limit = Limit.tool_calls(
        "crm_get", RateSpec(per_second=10, burst=1), scope=opts.RATE_LIMIT_SCOPE_TENANT, tenant="acme"
    )
    await limiter.acquire([limit], deadline=time.time() + 10)
    decision = await limiter.acquire([limit], deadline=time.time() + 10)  # waits ~0.1 s for a token
    assert decision.allowed


async def test_acquire_gives_up_at_once_when_the_wait_passes_the_deadline(limiter: RateLimiter) -> None:
    limit = Limit.user("acme", "u1", RateSpec(per_second=0.01, burst=1))
    await limiter.acquire([limit], deadline=time.time() + 1)
    started = time.monotonic()
    with pytest.raises(ResourceExhausted, match="deadline") as caught:
        await limiter.acquire([limit], deadline=time.time() + 5)
    assert time.monotonic() - started < 5  # did not sleep until the deadline
    assert caught.value.retry_after is not None and caught.value.retry_after > 90


async def test_no_limits_need_no_round_trip() -> None:
    class Unreachable:
        def register_script(self, script: str) -> object:
            return None

    assert (await RateLimiter(Unreachable()).check([])).allowed  # type: ignore[arg-type]


async def test_impossible_cost_is_refused(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="can never pass"):
        await limiter.check([Limit.user("acme", "u1", RateSpec(1, 2))], cost=3)


def test_the_rate_holds_across_two_processes(redis_url: str) -> None:
    rate, burst, seconds = 5.0, 3, 2.0
    start_at = time.time() + 1.5  # both processes are up and connected by then
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.limiter_racer",
                redis_url,
                str(start_at),
                str(seconds),
                str(rate),
                str(burst),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=60)[0].split() for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    admitted = sum(int(out[0]) for out in outputs)
    denied = sum(int(out[1]) for out in outputs)
    window = max(float(out[3]) for out in outputs) - min(float(out[2]) for out in outputs)
    # the bucket math: a full bucket plus what refills during the racing window, shared by both
    assert burst <= admitted <= burst + rate * window + 1
    assert denied > 0

"""agentmesh/kit/retry.py: the one backoff (full jitter, capped, never under RetryInfo)."""

from __future__ import annotations

import asyncio
import time

import pytest
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from agentmesh.kit.errors import Unavailable
from agentmesh.kit.retry import Backoff, Reconnect, retry_after


def test_ceiling_grows_then_caps() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, multiplier=2.0)
    assert [backoff.ceiling(n) for n in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_full_jitter_under_the_ceiling_and_never_under_retry_info() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0)
    assert backoff.delay(3, rng=lambda: 0.0) == 0.0
    assert backoff.delay(3, rng=lambda: 0.5) == pytest.approx(0.2)
    assert backoff.delay(3, retry_after=0.7, rng=lambda: 0.5) == 0.7  # the server's delay wins
    assert all(0 <= backoff.delay(10) <= 1.0 for _ in range(200))


def test_reconnect_counts_failures_until_reset() -> None:
    reconnect = Reconnect(Backoff(initial_s=0.1, max_s=0.4), rng=lambda: 1.0)
    assert [reconnect.next_delay() for _ in range(4)] == [0.1, 0.2, 0.4, 0.4]
    reconnect.reset()
    assert reconnect.next_delay() == 0.1


async def test_reconnect_wait_ends_when_stopped() -> None:
    reconnect = Reconnect(Backoff(initial_s=30.0, max_s=30.0), rng=lambda: 1.0)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    assert await reconnect.wait(stop) == 30.0
    assert time.monotonic() - started < 5.0


async def test_tenacity_waits_the_retry_info_of_the_failed_attempt() -> None:
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 2:
            raise Unavailable("busy", retry_after=0.3)
        return "ok"

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(Unavailable),
        wait=Backoff(initial_s=0.001, max_s=0.001).wait,
        stop=stop_after_attempt(3),
        reraise=True,
    ):
        with attempt:
            assert await flaky() == "ok"
    assert calls[1] - calls[0] >= 0.29
    assert retry_after(Unavailable("x", retry_after=1.5)) == 1.5
    assert retry_after(ValueError("x")) is None

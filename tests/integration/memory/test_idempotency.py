"""IdempotencyStore against a real server (and a real cluster)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from agentmesh.kit.config import Settings
from agentmesh.kit.errors import Aborted, DataLoss, InvalidArgument
from memory.connection import create_redis
from memory.idempotency import Claimed, IdempotencyStore, Replay
from tests.support.waiting import until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def store(redis_url: str):  # type: ignore[no-untyped-def]
    client = create_redis(redis_url)
    yield IdempotencyStore(client, scope="tool:payments_refund", lease_s=2, window_s=60)
    await client.aclose()


async def test_first_caller_claims_then_repeat_replays(store: IdempotencyStore) -> None:
    claim = await store.begin("k1", b"refund 10 EUR")
    assert isinstance(claim, Claimed)
    assert await store.complete(claim, b"refund-id-7")
    replay = await store.begin("k1", b"refund 10 EUR")
    assert replay == Replay(b"refund-id-7")


async def test_same_key_other_payload_is_a_conflict(store: IdempotencyStore) -> None:
    claim = await store.begin("k1", b"refund 10 EUR")
    assert isinstance(claim, Claimed)
    with pytest.raises(InvalidArgument) as caught:
        await store.begin("k1", b"refund 5000 EUR")
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    await store.complete(claim, b"ok")
    with pytest.raises(InvalidArgument):
        await store.begin("k1", b"refund 5000 EUR")


async def test_in_flight_is_aborted_with_retry_info(store: IdempotencyStore) -> None:
    await store.begin("k1", b"p")
    with pytest.raises(Aborted) as caught:
        await store.begin("k1", b"p")
    assert caught.value.reason == "IN_FLIGHT"
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 1.0


async def test_a_claim_re_sent_after_its_reply_was_lost_is_the_callers_own(store: IdempotencyStore) -> None:
    """redis-py re-sends a command whose connection was reset, with the same arguments: when the
    first BEGIN was applied and only its reply lost, the caller must get its claim, not an
    "in flight" refusal from its own orphaned claim (which would block every retry of the call
    for the whole lease, and the effect would never happen)."""
    script = store._begin

    async def reply_lost_once(keys: list[str], args: list[object]) -> object:
        await script(keys=keys, args=args)  # applied; the reply never arrives
        return await script(keys=keys, args=args)  # what redis-py does after the reset

    store._begin = reply_lost_once  # type: ignore[method-assign]
    claim = await store.begin("k1", b"refund 10 EUR")
    store._begin = script  # type: ignore[method-assign]
    assert isinstance(claim, Claimed)
    with pytest.raises(Aborted):  # anyone else still finds it in flight
        await store.begin("k1", b"refund 10 EUR")
    assert await store.complete(claim, b"refund-id-7")
    assert await store.begin("k1", b"refund 10 EUR") == Replay(b"refund-id-7")


async def test_release_lets_a_retry_run(store: IdempotencyStore) -> None:
    claim = await store.begin("k1", b"p")
    assert isinstance(claim, Claimed)
    await store.release(claim)
    again = await store.begin("k1", b"p")
    assert isinstance(again, Claimed) and again.token != claim.token


async def test_dead_first_caller_lease_expires(redis_url: str) -> None:
    client = create_redis(redis_url)
    store = IdempotencyStore(client, scope="s", lease_s=0.2)
    dead = await store.begin("k1", b"p")
    await asyncio.sleep(0.35)
    successor = await store.begin("k1", b"p")
    assert isinstance(successor, Claimed)
    assert isinstance(dead, Claimed)
    assert not await store.complete(dead, b"late")  # the dead caller's claim is gone
    assert await store.complete(successor, b"fresh")
    assert await store.begin("k1", b"p") == Replay(b"fresh")
    await client.aclose()


async def test_completed_keys_expire_after_the_window(redis_url: str, redis_client: aioredis.Redis) -> None:
    client = create_redis(redis_url)
    # The window (120 s) and the lease (30 s, the default) differ, so the stored result's expiry
    # shows which one it got.
    store = IdempotencyStore(client, scope="s", window_s=120)
    claim = await store.begin("k1", b"p")
    assert isinstance(claim, Claimed)
    assert 0 < await redis_client.pttl(claim.key) <= 30_000  # pending: the lease
    await store.complete(claim, b"r")
    ttl = await redis_client.pttl(claim.key)
    assert 100_000 < ttl <= 120_000
    await client.aclose()


async def test_run_releases_on_failure_and_retries(store: IdempotencyStore) -> None:
    calls = 0

    async def flaky() -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("gateway timeout")
        return b"done"

    with pytest.raises(ConnectionError):
        await store.run("k1", b"p", flaky)
    assert await store.run("k1", b"p", flaky) == b"done"
    assert await store.run("k1", b"p", flaky) == b"done"
    assert calls == 2


async def test_many_coroutines_one_execution(store: IdempotencyStore, redis_client: aioredis.Redis) -> None:
    async def side_effect() -> bytes:
        count = await redis_client.incr("executions")
        await asyncio.sleep(0.05)
        return f"#{count}".encode()

    async def caller() -> bytes:
        while True:
            try:
                return await store.run("k1", b"p", side_effect)
            except Aborted as exc:
                await asyncio.sleep(exc.retry_after or 0.05)

    results = await asyncio.gather(*(caller() for _ in range(50)))
    assert set(results) == {b"#1"}
    assert int(await redis_client.get("executions")) == 1


def test_two_processes_race_and_exactly_one_executes(redis_url: str) -> None:
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.idempotency_racer", redis_url, "order-42", "20"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=60)[0].split() for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    results = {line for output in outputs for line in output}
    assert len(outputs[0]) == len(outputs[1]) == 20
    assert len(results) == 1 and results.pop().endswith("#1")


async def test_works_on_a_cluster() -> None:
    from agentmesh.localmesh.embedded_redis import start_cluster

    with start_cluster(3) as cluster:
        client = create_redis(cluster.url)
        store = IdempotencyStore(client, scope="tool:x")
        for index in range(20):  # keys spread over all nodes
            assert await store.run(f"k{index}", b"p", lambda i=index: _value(i)) == f"v{index}".encode()
            assert await store.run(f"k{index}", b"p", lambda: _value(-1)) == f"v{index}".encode()
        await client.aclose()


async def _value(index: int) -> bytes:
    return f"v{index}".encode()


async def test_unreadable_or_foreign_records_are_data_loss(
    store: IdempotencyStore, redis_client: aioredis.Redis
) -> None:
    claim = await store.begin("k1", b"p")
    assert isinstance(claim, Claimed)
    await store.complete(claim, b"r")
    await redis_client.hset(claim.key, "v", "9")  # written by a newer release
    with pytest.raises(DataLoss, match="not readable by this release"):
        await store.begin("k1", b"p")
    await redis_client.hset(store._key("k2"), "something", "else")  # foreign hash: never overwritten
    with pytest.raises(DataLoss):
        await store.begin("k2", b"p")
    assert await redis_client.hgetall(store._key("k2")) == {b"something": b"else"}


async def test_window_comes_from_settings(redis_url: str) -> None:
    client = create_redis(redis_url)
    settings = Settings.from_env({"AGENTMESH_IDEMPOTENCY_WINDOW": "120"})
    store = IdempotencyStore.from_settings(client, settings, scope="submit:refunds")
    assert store.window_ms == 120_000 and store.scope == "submit:refunds"
    assert store.lease_ms == 30_000  # the default lease
    short = IdempotencyStore.from_settings(client, settings, scope="tool:x", lease_s=5)
    assert short.lease_ms == 5_000 and short.window_ms == 120_000
    await client.aclose()


async def test_extend_renews_the_lease_of_the_holder_only(
    store: IdempotencyStore, redis_client: aioredis.Redis
) -> None:
    claim = await store.begin("k-extend", b"p")
    assert isinstance(claim, Claimed)
    await redis_client.pexpire(claim.key, 50)  # the lease is about to run out
    assert await store.extend(claim)
    assert 1_500 < await redis_client.pttl(claim.key) <= 2_000  # renewed to the whole lease (2 s)
    stranger = Claimed(claim.key, "not-the-holder")
    await redis_client.pexpire(claim.key, 500)
    assert not await store.extend(stranger)
    assert await redis_client.pttl(claim.key) <= 500  # a stranger renews nothing


async def test_a_call_longer_than_the_lease_keeps_its_key(redis_url: str) -> None:
    """run() renews the lease while the work runs: a duplicate arriving after the first lease
    would have expired is still told the call is in flight (not handed a second claim)."""
    client = create_redis(redis_url)
    store = IdempotencyStore(client, scope="s", lease_s=0.6)
    release = asyncio.Event()
    runs = 0

    async def work() -> bytes:
        nonlocal runs
        runs += 1
        await release.wait()
        return b"charged once"

    first = asyncio.create_task(store.run("k1", b"p", work))
    await until(lambda: runs == 1, what="the first call's work to start")
    await asyncio.sleep(1.5)  # 2.5 leases: without renewals the key would have expired
    duplicates = 0

    async def duplicate() -> bytes:
        nonlocal duplicates
        duplicates += 1
        return b"charged twice"

    with pytest.raises(Aborted) as in_flight:
        await store.run("k1", b"p", duplicate)
    release.set()
    assert await first == b"charged once"
    assert await store.run("k1", b"p", duplicate) == b"charged once"  # the duplicate replays
    assert (runs, duplicates) == (1, 0) and in_flight.value.retry_after
    await client.aclose()


async def test_release_by_a_former_holder_leaves_the_new_claim(store: IdempotencyStore) -> None:
    claim = await store.begin("k-release", b"p")
    assert isinstance(claim, Claimed)
    former = Claimed(claim.key, "token-of-a-lease-that-expired")
    await store.release(former)
    with pytest.raises(Aborted):  # still in flight: the holder's claim stands
        await store.begin("k-release", b"p")
    assert await store.complete(claim, b"r")


async def test_a_completed_claim_can_no_longer_be_released_or_renewed(
    store: IdempotencyStore, redis_client: aioredis.Redis
) -> None:
    """Completing consumes the holder's token: a late release (a cleanup path that still holds
    the claim) cannot delete the stored result, and a late renewal cannot cut the window down
    to a lease."""
    claim = await store.begin("k-done", b"p")
    assert isinstance(claim, Claimed)
    assert await store.complete(claim, b"r")
    assert not await store.extend(claim)
    assert await redis_client.pttl(claim.key) > 2_000  # still the window (60 s), not the lease (2 s)
    await store.release(claim)
    assert await store.begin("k-done", b"p") == Replay(b"r")


async def test_a_lease_or_window_that_is_not_positive_is_refused(redis_client: aioredis.Redis) -> None:
    """A zero lease would expire every claim at once (two callers both run the side effect)."""
    for lease_s, window_s in [(0, 60), (-1, 60), (2, 0), (2, -1), (0, 0)]:
        with pytest.raises(ValueError, match=r"^lease and window must be positive$"):
            IdempotencyStore(redis_client, scope="s", lease_s=lease_s, window_s=window_s)
    short = IdempotencyStore(redis_client, scope="s", lease_s=0.5, window_s=0.5)  # any positive length
    assert (short.lease_ms, short.window_ms) == (500, 500)


async def test_a_foreign_value_under_the_key_is_data_loss_naming_the_step(
    store: IdempotencyStore, redis_client: aioredis.Redis
) -> None:
    """Something not ours put under the key meanwhile: every step answers DATA_LOSS saying what
    it was doing, and leaves the value alone."""
    claim = await store.begin("k-foreign", b"p")
    assert isinstance(claim, Claimed)
    await redis_client.set(claim.key, "not a hash")
    steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("checking idempotency key 'k-foreign'", lambda: store.begin("k-foreign", b"p")),
        ("storing an idempotent result", lambda: store.complete(claim, b"r")),
        ("extending an idempotency lease", lambda: store.extend(claim)),
        ("releasing an idempotency key", lambda: store.release(claim)),
    ]
    for what, step in steps:
        with pytest.raises(DataLoss, match=f"^unexpected data type under an agentmesh key while {what};"):
            await step()
    assert await redis_client.get(claim.key) == b"not a hash"


async def test_refusals_say_why_and_name_the_key_and_the_scope(store: IdempotencyStore) -> None:
    claim = await store.begin("k-refused", b"refund 10 EUR")
    assert isinstance(claim, Claimed)
    named = {"idempotency_key": "k-refused", "scope": "tool:payments_refund"}
    with pytest.raises(InvalidArgument) as conflict:
        await store.begin("k-refused", b"refund 5000 EUR")
    assert str(conflict.value) == "idempotency key 'k-refused' was already used for a different request"
    assert conflict.value.metadata == named
    with pytest.raises(Aborted) as in_flight:
        await store.begin("k-refused", b"refund 10 EUR")
    assert str(in_flight.value) == (
        "a request with idempotency key 'k-refused' is still in flight; retry shortly"
    )
    assert (in_flight.value.reason, in_flight.value.metadata) == ("IN_FLIGHT", named)


async def test_an_unreadable_record_names_its_format_and_the_key(
    store: IdempotencyStore, redis_client: aioredis.Redis
) -> None:
    """The DATA_LOSS message names the stored format (even one that is not text, or none: a
    foreign hash) and what this release reads."""
    key = store._key("k-format")
    named = {"idempotency_key": "k-format", "scope": "tool:payments_refund"}
    for stored, shown in [(b"9", "9"), (b"\xff", "\ufffd"), (None, "unknown")]:
        await redis_client.delete(key)
        if stored is None:
            await redis_client.hset(key, "something", "else")
        else:
            await redis_client.hset(key, mapping={"v": stored, "state": "done", "fp": "x", "result": "r"})
        with pytest.raises(DataLoss) as caught:
            await store.begin("k-format", b"p")
        assert f"(format {shown}; reads ['1'])" in str(caught.value)
        assert caught.value.metadata == named


async def test_the_in_flight_retry_hint_is_the_time_left_on_the_lease(
    store: IdempotencyStore, redis_client: aioredis.Redis
) -> None:
    """Under a second left, the hint is the lease's remaining milliseconds (PTTL / 1000)."""
    claim = await store.begin("k-hint", b"p")
    assert isinstance(claim, Claimed)
    await redis_client.pexpire(claim.key, 900)
    with pytest.raises(Aborted) as caught:
        await store.begin("k-hint", b"p")
    left_after = await redis_client.pttl(claim.key)
    assert caught.value.retry_after is not None
    hint_ms = caught.value.retry_after * 1000
    assert hint_ms == pytest.approx(round(hint_ms), abs=1e-6)  # whole milliseconds, as PTTL gives them
    assert left_after <= round(hint_ms) <= 900


async def test_a_release_that_fails_does_not_hide_the_error_of_the_work(
    store: IdempotencyStore, redis_client: aioredis.Redis
) -> None:
    """run() releases the key when the work fails; if that release fails too (here foreign data
    put under the key meanwhile), the caller still gets the work's own error: it is what a retry
    decision reads."""

    async def work() -> bytes:
        await redis_client.set(store._key("k-lost"), "not a hash")
        raise ConnectionError("gateway timeout")

    with pytest.raises(ConnectionError, match="gateway timeout"):
        await store.run("k-lost", b"p", work)


async def test_run_leaves_no_failed_lease_keeper_behind(store: IdempotencyStore) -> None:
    """The task renewing the lease ends canceled when the work is done, not with an exception
    nobody retrieves (asyncio would report one per call)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))

    async def work() -> bytes:
        await asyncio.sleep(0)  # the keeper, created just before, runs to its first sleep
        return b"r"

    try:
        assert await store.run("k-keeper", b"p", work) == b"r"
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert unhandled == []

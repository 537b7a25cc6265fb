"""IdempotencyStore against a real server (and a real cluster)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

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

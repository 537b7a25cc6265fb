"""FactStore against a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from agentmesh.kit.errors import DataLoss, InvalidArgument, ResourceExhausted
from memory import keys
from memory.connection import create_redis
from memory.context import Turn
from memory.facts import FactStore
from memory.sessions import SessionStore

pytestmark = pytest.mark.integration
T, U = "acme", "u-1"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = create_redis(redis_url)
    yield redis
    await redis.aclose()


async def test_put_get_list_with_provenance(client: aioredis.Redis) -> None:
    facts = FactStore(client, default_ttl_s=3600)
    written = await facts.put(T, U, "preferred_carrier", "DHL", task_id="t-9", step=3)
    got = await facts.get(T, U, "preferred_carrier")
    assert got == written and (got.task_id, got.step, got.pinned) == ("t-9", 3, True)
    assert got.expires_at is not None and got.expires_at - time.time() == pytest.approx(3600, abs=5)
    await facts.put(T, U, "language", "de", ttl_s=0)
    assert [f.key for f in await facts.list(T, U)] == ["language", "preferred_carrier"]
    assert (await facts.get(T, U, "language")).expires_at is None  # type: ignore[union-attr]
    assert await facts.get(T, "someone-else", "language") is None


async def test_keys_live_as_long_as_the_latest_fact(client: aioredis.Redis) -> None:
    facts = FactStore(client)
    await facts.put(T, U, "a", "1", ttl_s=100)
    await facts.put(T, U, "b", "2", ttl_s=1000)
    for key in (keys.user_facts(T, U), keys.user_fact_expiry(T, U)):
        assert 990_000 < await client.pttl(key) <= 1_000_100
    await facts.put(T, U, "c", "3", ttl_s=0)
    assert await client.pttl(keys.user_facts(T, U)) == -1  # a permanent fact keeps the hash


async def test_expired_facts_vanish(client: aioredis.Redis) -> None:
    facts = FactStore(client)
    await facts.put(T, U, "short", "x", ttl_s=0.2)
    await facts.put(T, U, "long", "y", ttl_s=60)
    await asyncio.sleep(0.3)
    assert await facts.get(T, U, "short") is None
    assert [f.key for f in await facts.list(T, U)] == ["long"]
    await facts.put(T, U, "other", "z")  # a write prunes the expired field
    assert not await client.hexists(keys.user_facts(T, U), "short")


async def test_overwrite_updates_and_the_cap_holds(client: aioredis.Redis) -> None:
    facts = FactStore(client, max_facts=2)
    await facts.put(T, U, "a", "1")
    await facts.put(T, U, "b", "2")
    await facts.put(T, U, "a", "updated", task_id="t-2", step=1)
    assert (await facts.get(T, U, "a")).value == "updated"  # type: ignore[union-attr]
    with pytest.raises(ResourceExhausted) as caught:
        await facts.put(T, U, "c", "3")
    assert caught.value.reason == "BUDGET_EXHAUSTED" and caught.value.retry_after is None
    assert await facts.delete(T, U, "a") and not await facts.delete(T, U, "a")
    await facts.put(T, U, "c", "3")
    assert await facts.clear(T, U) == 2
    assert await facts.list(T, U) == []


async def test_bad_facts_are_invalid_argument(client: aioredis.Redis) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await FactStore(client).put(T, "", "bad key!", "v" * 5000, ttl_s=-1)
    assert {v.field for v in caught.value.violations} == {"user", "key", "value", "ttl_s"}


async def test_foreign_data_is_data_loss(client: aioredis.Redis) -> None:
    await client.hset(keys.user_facts(T, U), "x", "plain text")
    with pytest.raises(DataLoss):
        await FactStore(client).list(T, U)


async def test_pinned_facts_enter_packets_newest_first(client: aioredis.Redis) -> None:
    facts = FactStore(client)
    await facts.put(T, U, "old", "first")
    await facts.put(T, U, "hidden", "not pinned", pinned=False)
    await facts.put(T, U, "new", "second")
    sessions = SessionStore(client)
    await sessions.append(T, U, "s-1", Turn.user("hi"))
    packet = await sessions.packet(T, U, "s-1", budget=1000)
    assert packet.facts_included == 2 and "not pinned" not in packet.system
    assert packet.system.index("new: second") < packet.system.index("old: first")

"""Forgetting a user removes everything of theirs and nothing of anyone else's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from agentmesh.kit.config import RateSpec
from agentmesh.v1 import tool_options_pb2 as opts
from memory import keys
from memory.connection import AnyRedis, create_redis
from memory.context import Turn
from memory.facts import FactStore
from memory.forget import find_user_data, forget_user
from memory.prices import builtin_prices
from memory.rate_limits import Limit, RateLimiter
from memory.sessions import SessionStore
from memory.usage import Attribution, StepUsage, UsageStore

pytestmark = pytest.mark.integration
T = "acme"


def turn(model: str, prompt_tokens: int, completion_tokens: int, wall_s: float = 0.0) -> StepUsage:
    """A model turn priced the one way (the built-in prices), as the agent's state machine does."""
    cost = builtin_prices().cost(model, prompt_tokens, completion_tokens)
    return StepUsage.model_call(prompt_tokens, completion_tokens, cost, wall_s=wall_s)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = create_redis(redis_url)
    yield redis
    await redis.aclose()


async def remember(redis: AnyRedis, tenant: str, user: str) -> None:
    """Everything the memory layer can hold about a user."""
    sessions, facts = SessionStore(redis), FactStore(redis)
    for session_id in ("s-1", "s:2"):
        await sessions.append(tenant, user, session_id, Turn.user(f"hello from {user}"), Turn.assistant("hi"))
    await facts.put(tenant, user, "carrier", "DHL")
    await facts.put(tenant, user, "language", "de", ttl_s=0)
    usage = UsageStore(redis)
    in_session = Attribution(tenant, user, "refunds", "t-1", "s-1")
    await usage.record(in_session, turn("gpt-4o", 10, 5))
    await usage.record(Attribution(tenant, user, "fulfillment", "t-2"), StepUsage.tool_call("crm_get"))
    rate = RateSpec(10, 10)
    await RateLimiter(redis).check(
        [
            Limit.tenant(tenant, rate),
            Limit.user(tenant, user, rate),
            Limit.tool_calls("crm_get", rate, scope=opts.RATE_LIMIT_SCOPE_USER, tenant=tenant, user=user),
        ]
    )


async def dump(redis: AnyRedis) -> dict[bytes, object]:
    """Every key with its value (for comparing before and after)."""
    state: dict[bytes, object] = {}
    async for key in redis.scan_iter(match="*", count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            state[key] = await redis.get(key)
        elif kind == "hash":
            state[key] = await redis.hgetall(key)
        elif kind == "list":
            state[key] = await redis.lrange(key, 0, -1)
        elif kind == "zset":
            state[key] = await redis.zrange(key, 0, -1)
    return state


def belongs_to(key: bytes, tenant: str, user: str) -> bool:
    """Any key naming (tenant, user): their session, user and rate-limit tags."""
    text = key.decode()
    owner = f"{keys.part(tenant)}:{keys.part(user)}"
    in_tenant_buckets = text.startswith(f"am:{{r:{keys.part(tenant)}}}:")
    return (
        f"{{s:{owner}:" in text
        or f"{{u:{owner}}}" in text
        or (in_tenant_buckets and text.endswith(f":user:{keys.part(user)}"))
    )


async def test_forget_removes_everything_of_the_user_and_nothing_else(client: aioredis.Redis) -> None:
    await remember(client, T, "alice")
    await remember(client, T, "bob")
    await remember(client, "globex", "alice")  # same user id, another tenant
    await remember(client, T, "alice:admin")  # a look-alike id
    before = await dump(client)
    mine = {k for k in before if belongs_to(k, T, "alice")}
    assert len(mine) >= 12  # sessions, index, facts, usage, buckets

    found = await find_user_data(client, T, "alice")
    assert found.sessions == {"s-1", "s:2"} and found.facts == 2
    report = await forget_user(client, T, "alice")
    assert report.deleted["sessions"] == 2 and report.deleted["facts"] == 2
    assert report.deleted["usage_counters"] >= 6 and report.deleted["rate_limit_buckets"] == 2
    assert set(report.keys) == {k.decode() for k in mine}

    after = await dump(client)
    assert not [k for k in after if belongs_to(k, T, "alice")]  # nothing of alice in acme
    # everyone else is untouched (rate buckets refill with time: compare those by presence)
    for key, value in before.items():
        if key in mine:
            continue
        assert key in after
        if not key.startswith(b"am:{r"):
            assert after[key] == value
    # the tenant's domain totals are aggregates, not alice's: they stay
    assert keys.usage_domain(T, "refunds").encode() in after
    again = await forget_user(client, T, "alice")
    assert again.keys == [] and set(again.deleted.values()) == {0}


async def test_forgetting_a_stranger_deletes_nothing(client: aioredis.Redis) -> None:
    await remember(client, T, "bob")
    before = await dump(client)
    report = await forget_user(client, T, "nobody")
    assert report.keys == [] and set(report.deleted.values()) == {0}
    assert (await dump(client)).keys() == before.keys()


async def test_a_session_missing_from_the_index_is_found_too(client: aioredis.Redis) -> None:
    await remember(client, T, "alice")
    await client.delete(keys.user_sessions(T, "alice"))
    report = await forget_user(client, T, "alice")
    assert report.deleted["sessions"] == 2
    assert [k async for k in client.scan_iter(match=keys.session_pattern(T, "alice"))] == []

"""The memory stores on a real 3-node Valkey Cluster: every multi-key script stays in one slot."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from agentmesh.kit.config import RateSpec
from agentmesh.localmesh.embedded_redis import EmbeddedCluster
from agentmesh.v1 import tool_options_pb2 as opts
from memory.connection import create_redis
from memory.context import Turn, TurnToolCall
from memory.facts import FactStore
from memory.forget import forget_user
from memory.prices import builtin_prices
from memory.rate_limits import Limit, RateLimiter
from memory.sessions import SessionStore
from memory.summarizer import DeterministicSummarizer
from memory.usage import Attribution, Budgets, StepUsage, UsageStore

pytestmark = pytest.mark.integration


def turn(model: str, prompt_tokens: int, completion_tokens: int, wall_s: float = 0.0) -> StepUsage:
    """A model turn priced the one way (the built-in prices), as the agent's state machine does."""
    cost = builtin_prices().cost(model, prompt_tokens, completion_tokens)
    return StepUsage.model_call(prompt_tokens, completion_tokens, cost, wall_s=wall_s)


@pytest.fixture
def cluster(redis_cluster: EmbeddedCluster) -> EmbeddedCluster:
    return redis_cluster  # the session's cluster (tests/conftest.py)


@pytest.fixture
async def client(cluster: EmbeddedCluster) -> AsyncIterator[RedisCluster]:
    redis = create_redis(cluster.url)
    assert isinstance(redis, RedisCluster)
    await redis.initialize()
    await redis.flushall()
    yield redis
    await redis.aclose()


USERS = [f"user-{n}" for n in range(12)]  # spread over all three nodes


async def test_sessions_packets_and_compaction(client: RedisCluster) -> None:
    sessions, facts = SessionStore(client), FactStore(client)
    for user in USERS:
        await facts.put("acme", user, "carrier", "DHL")
        for index in range(15):
            await sessions.append(
                "acme",
                user,
                "s-1",
                Turn.user(f"question {index} " * 20),
                Turn.assistant(tool_calls=[TurnToolCall(f"c{index}", "orders_get", "{}")]),
                Turn.tool(f"c{index}", "orders_get", "ok " * 30),
            )
        packet = await sessions.packet("acme", user, "s-1", budget=800)
        assert packet.needs_compaction and packet.facts_included == 1 and packet.tokens <= 800
        result = await sessions.compact("acme", user, "s-1", DeterministicSummarizer(), budget=800)
        assert result is not None and result.folded_turns > 0
        assert (await sessions.packet("acme", user, "s-1", budget=800)).summary_included
        assert await sessions.delete("acme", user, "s-1")


async def test_limits_in_one_slot_and_across_slots(client: RedisCluster) -> None:
    limiter = RateLimiter(client)
    for user in USERS:
        tenant_side = [
            Limit.tenant(f"tenant-{user}", RateSpec(100, 100)),
            Limit.user(f"tenant-{user}", user, RateSpec(1, 2)),
        ]
        shared = Limit.tool_calls("payments_refund", RateSpec(100, 100), scope=opts.RATE_LIMIT_SCOPE_GLOBAL)
        assert (await limiter.check([*tenant_side, shared])).allowed
        assert (await limiter.check(tenant_side)).allowed
        refused = await limiter.check([*tenant_side, shared])
        assert not refused.allowed and refused.limit == tenant_side[1]
    tight_shared = Limit.domain("refunds", RateSpec(0.1, 1))
    assert (await limiter.check([tight_shared])).allowed
    tenant = Limit.tenant("acme", RateSpec(1, 3))
    assert not (await limiter.check([tenant, tight_shared])).allowed  # refused by the shared slot...
    for _ in range(3):  # ...and the tenant's token was given back
        assert (await limiter.check([tenant])).allowed


async def test_usage_and_budgets(client: RedisCluster) -> None:
    usage = UsageStore(client)
    daily = Budgets(user_daily_tokens=100)
    for user in USERS:
        who = Attribution("acme", user, "refunds", task_id=f"t-{user}", session_id="s-1")
        await usage.record(who, turn("gpt-4o", 60, 10), budgets=daily)
        status = await usage.record(who, turn("gpt-4o", 30, 10), budgets=daily)
        assert status.exhausted is not None and status.exhausted.budget == "tokens"
        response = await usage.get_usage("acme", user, "refunds", "s-1")
        assert response.tasks == 1 and response.usage.total_tokens == 110
    total = await usage.for_domain("refunds")  # SCAN over every node
    assert total.tasks == len(USERS) and total.usage.total_tokens == 110 * len(USERS)


async def node_sizes(cluster: EmbeddedCluster) -> list[int]:
    sizes = []
    for node in cluster.nodes:
        direct = aioredis.Redis(host=node.host, port=node.port)
        sizes.append(int(await direct.dbsize()))
        await direct.aclose()
    return sizes


async def test_forget_scans_every_node(cluster: EmbeddedCluster, client: RedisCluster) -> None:
    sessions, facts, usage = SessionStore(client), FactStore(client), UsageStore(client)
    for user in ("alice", "bob"):
        for session_id in (f"s-{n}" for n in range(8)):  # session keys land on different nodes
            await sessions.append("acme", user, session_id, Turn.user("hi"))
        await facts.put("acme", user, "k", "v")
        who = Attribution("acme", user, "refunds", "t-1", "s-1")
        await usage.record(who, turn("m", 1, 1))
    assert all(await node_sizes(cluster)), "the data is spread over every node"
    report = await forget_user(client, "acme", "alice")
    assert report.deleted["sessions"] == 8 and report.deleted["facts"] == 1
    remaining = [k async for k in client.scan_iter(match="*alice*", count=1000)]
    assert remaining == []
    assert len(await sessions.list_sessions("acme", "bob")) == 8

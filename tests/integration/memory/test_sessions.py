"""SessionStore against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis

from agentmesh.kit.errors import DataLoss, InvalidArgument
from memory import keys
from memory.connection import create_redis
from memory.context import ERROR_STUB_SUFFIX, Turn, TurnToolCall, estimate_tokens
from memory.facts import FactStore
from memory.sessions import SessionStore
from memory.summarizer import DeterministicSummarizer

pytestmark = pytest.mark.integration
T, U, S = "acme", "u-1", "s-1"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = create_redis(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
def store(client: aioredis.Redis) -> SessionStore:
    return SessionStore(client, idle_ttl_s=600, max_turns=200)


async def test_append_then_packet_round_trip(store: SessionStore, client: aioredis.Redis) -> None:
    await store.append(T, U, S, Turn.user("Where is order A-1?", task_id="t-1", step=0))
    count = await store.append(
        T,
        U,
        S,
        Turn.assistant(tool_calls=[TurnToolCall("c1", "orders_get", '{"id": "A-1"}')], task_id="t-1", step=1),
        Turn.tool("c1", "orders_get", '{"status": "shipped"}', task_id="t-1", step=1),
        Turn.assistant("It shipped yesterday.", task_id="t-1", step=2),
    )
    assert count == 4
    await FactStore(client).put(T, U, "carrier", "DHL", task_id="t-0", step=3)
    packet = await store.packet(T, U, S, budget=2000)
    assert [m["role"] for m in packet.messages] == ["user", "assistant", "tool", "assistant"]
    assert packet.messages[1]["tool_calls"][0]["function"]["name"] == "orders_get"
    assert "carrier: DHL" in packet.system and packet.facts_included == 1
    stored = await store.turns(T, U, S)
    assert [t.step for t in stored] == [0, 1, 1, 2] and all(t.task_id == "t-1" for t in stored)
    assert all(t.tokens > 0 and t.at > 0 for t in stored)
    assert stored[1].tool_calls == (TurnToolCall("c1", "orders_get", '{"id": "A-1"}'),)


async def test_sessions_expire_when_idle(store: SessionStore, client: aioredis.Redis) -> None:
    await store.append(T, U, S, Turn.user("hi"))
    for key in (keys.session_turns(T, U, S), keys.session_meta(T, U, S), keys.user_sessions(T, U)):
        assert 590_000 < await client.pttl(key) <= 600_000
    assert [name for name, _ in await store.list_sessions(T, U)] == [S]


async def test_unknown_session_is_an_empty_packet(store: SessionStore) -> None:
    packet = await store.packet(T, U, "never-seen", budget=500)
    assert packet.messages == [] and packet.tokens == 0
    assert await store.info(T, U, "never-seen") is None


async def test_sessions_are_per_tenant_and_user(store: SessionStore) -> None:
    await store.append(T, U, S, Turn.user("mine"))
    assert (await store.packet(T, "u-2", S, budget=500)).messages == []
    assert (await store.packet("other", U, S, budget=500)).messages == []


async def test_hard_cap_drops_the_oldest_and_counts_them(client: aioredis.Redis) -> None:
    store = SessionStore(client, max_turns=50)
    for index in range(6):
        await store.append(T, U, S, *[Turn.user(f"{index}-{n}") for n in range(10)])
    info = await store.info(T, U, S)
    assert info is not None and info.turns == 50 and info.dropped == 10
    assert (await store.turns(T, U, S))[0].content == "1-0"


async def test_delete_forgets_the_session(store: SessionStore, client: aioredis.Redis) -> None:
    await store.append(T, U, S, Turn.user("hi"))
    assert await store.delete(T, U, S)
    assert not await store.delete(T, U, S)
    assert await client.exists(keys.session_turns(T, U, S), keys.session_meta(T, U, S)) == 0
    assert await store.list_sessions(T, U) == []


async def test_bad_input_is_invalid_argument(store: SessionStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await store.append("", U, "bad id!", Turn.user("x" * 70_000), Turn.tool("", "t", "no call id"))
    fields = {v.field for v in caught.value.violations}
    assert fields == {"tenant", "session_id", "turns[0].content", "turns[1].tool_call_id"}
    with pytest.raises(InvalidArgument):
        await store.packet(T, U, S, budget=10)


async def test_foreign_data_is_data_loss(store: SessionStore, client: aioredis.Redis) -> None:
    await client.rpush(keys.session_turns(T, U, S), b"not ours")
    with pytest.raises(DataLoss, match="not an agentmesh record"):
        await store.packet(T, U, S, budget=500)


async def long_session(store: SessionStore, exchanges: int = 30) -> None:
    for index in range(exchanges):
        await store.append(
            T,
            U,
            S,
            Turn.user(f"Question {index}: " + "details " * 30),
            Turn.assistant(f"Answer {index}: " + "because " * 30),
        )


async def test_compaction_folds_old_turns_into_the_summary(store: SessionStore) -> None:
    await long_session(store)
    await store.append(
        T,
        U,
        S,
        Turn.user("Refund order A-1"),
        Turn.assistant(tool_calls=[TurnToolCall("c1", "payments_refund", "{}")]),
        Turn.tool("c1", "payments_refund", "GatewayError: declined\n" + "  at frame\n" * 300, is_error=True),
    )
    before = await store.packet(T, U, S, budget=2000)
    assert before.needs_compaction and before.turns_omitted > 0
    result = await store.compact(T, U, S, DeterministicSummarizer(), budget=2000)
    assert result is not None and result.folded_turns > 0
    assert result.tokens_after < result.tokens_before
    turns = await store.turns(T, U, S)
    assert turns[-3].content == "Refund order A-1"
    assert turns[-1].content == "GatewayError: declined" + ERROR_STUB_SUFFIX
    info = await store.info(T, U, S)
    assert info is not None and info.compactions == 1 and info.folded == result.folded_turns
    # bounded to the summary share of the budget, newest part kept
    assert estimate_tokens(info.summary) <= 500 and info.summary.startswith("…")
    assert info.summary.endswith("Tool payments_refund failed: GatewayError: declined")
    after = await store.packet(T, U, S, budget=2000)
    assert after.summary_included and not after.needs_compaction and after.turns_omitted == 0
    assert after.messages[-1]["content"].endswith(ERROR_STUB_SUFFIX)
    # nothing left to fold
    assert await store.compact(T, U, S, DeterministicSummarizer(), budget=2000) is None


async def test_turns_appended_during_compaction_are_kept(store: SessionStore) -> None:
    await long_session(store)
    real = DeterministicSummarizer()

    async def slow_summarizer(turns: Sequence[Turn]) -> str:
        await store.append(T, U, S, Turn.user("arrived while summarizing"))
        return await real(turns)

    result = await store.compact(T, U, S, slow_summarizer, budget=1500)
    assert result is not None
    turns = await store.turns(T, U, S)
    assert turns[-1].content == "arrived while summarizing"
    assert len(turns) == result.kept_turns + 1


async def test_compaction_is_refused_when_the_session_changed(store: SessionStore) -> None:
    await long_session(store)
    real = DeterministicSummarizer()

    async def deleting_summarizer(turns: Sequence[Turn]) -> str:
        await store.delete(T, U, S)
        await store.append(T, U, S, Turn.user("a new conversation"))
        return await real(turns)

    assert await store.compact(T, U, S, deleting_summarizer, budget=1500) is None
    assert [t.content for t in await store.turns(T, U, S)] == ["a new conversation"]
    info = await store.info(T, U, S)
    assert info is not None and info.summary == ""


async def test_one_replica_compacts_at_a_time(store: SessionStore) -> None:
    await long_session(store)
    calls = 0
    gate = asyncio.Event()

    async def gated(turns: Sequence[Turn]) -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "summary"

    first = asyncio.create_task(store.compact(T, U, S, gated, budget=1500))
    await asyncio.sleep(0.05)
    assert await store.compact(T, U, S, gated, budget=1500) is None  # the lease is taken
    gate.set()
    assert await first is not None and calls == 1
    # the lease is released afterwards
    await long_session(store, 10)
    assert await store.compact(T, U, S, DeterministicSummarizer(), budget=1500) is not None


async def test_model_tokenizer_can_count_the_packet(store: SessionStore) -> None:
    await long_session(store, 5)

    def words(text: str) -> int:
        return len(text.split())

    packet = await store.packet(T, U, S, budget=200, counter=words)
    assert packet.tokens <= 200
    assert packet.tokens != (await store.packet(T, U, S, budget=200)).tokens or estimate_tokens("x") == 1


async def test_stores_follow_settings(client: aioredis.Redis) -> None:
    from agentmesh.kit.config import Settings

    settings = Settings.from_env({"AGENTMESH_SESSION_IDLE_TTL": "60", "AGENTMESH_SESSION_MAX_TURNS": "20"})
    store = SessionStore.from_settings(client, settings)
    assert (store.idle_ttl_ms, store.max_turns) == (60_000, 20)
    assert FactStore.from_settings(client, Settings.from_env({"AGENTMESH_FACT_TTL": "0"})).default_ttl_s == 0

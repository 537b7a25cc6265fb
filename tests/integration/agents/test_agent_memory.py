"""Session context, compaction and Run admission against the real Redis of the harness."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from agentmesh.kit.config import Settings
from agentmesh.kit.errors import ResourceExhausted
from agents.admission import RunAdmission, run_limits
from agents.caller import Caller
from agents.model.openai import OpenAICompatibleModel
from agents.model.script import Script
from agents.model.types import ChatMessage, ChatRole, ToolCall
from agents.scripted_model import ScriptedModelServer
from agents.session_context import ModelSummarizer, SessionContext
from agents.spec import parse_spec
from memory.context import Turn
from memory.rate_limits import RateLimiter
from memory.sessions import SessionStore
from memory.summarizer import DeterministicSummarizer

pytestmark = pytest.mark.integration
ADA = Caller("acme", "ada")


def task_turns(i: int) -> list[ChatMessage]:
    call = ToolCall(f"c{i}", "inventory_check", '{"sku":"A-1"}', {"sku": "A-1"})
    return [
        ChatMessage(ChatRole.USER, f"ship order ORD-{i}"),
        ChatMessage(ChatRole.ASSISTANT, "", tool_calls=(call,)),
        ChatMessage(
            ChatRole.TOOL,
            json.dumps({"status": "OK", "result": {"available": i}}),
            tool_call_id=f"c{i}",
            name="inventory_check",
        ),
        ChatMessage(ChatRole.ASSISTANT, f"ORD-{i} shipped"),
    ]


@pytest.fixture
async def sessions(redis_client: redis_asyncio.Redis) -> AsyncIterator[SessionContext]:
    context = SessionContext(SessionStore(redis_client), DeterministicSummarizer())
    yield context
    await context.close()


async def test_turns_come_back_as_context(sessions: SessionContext) -> None:
    assert await sessions.context(ADA, "s-1", token_cap=16384) == []
    await sessions.remember(ADA, "s-1", task_turns(1), task_id="t-1", token_cap=16384)
    context = await sessions.context(ADA, "s-1", token_cap=16384)
    roles = [m.role for m in context]
    assert roles == [ChatRole.USER, ChatRole.ASSISTANT, ChatRole.TOOL, ChatRole.ASSISTANT]
    assert context[1].tool_calls[0].name == "inventory_check" and context[2].tool_call_id == "c1"
    assert await sessions.context(Caller("acme", "bob"), "s-1", token_cap=16384) == []  # per user


async def test_forget_reports_whether_there_was_a_session(sessions: SessionContext) -> None:
    await sessions.remember(ADA, "s-2", task_turns(1), task_id="t-1", token_cap=16384)
    assert await sessions.forget(ADA, "s-2") is True
    assert await sessions.forget(ADA, "s-2") is False
    assert await sessions.context(ADA, "s-2", token_cap=16384) == []


async def test_long_sessions_are_compacted_into_a_summary(sessions: SessionContext) -> None:
    for i in range(40):
        await sessions.remember(ADA, "s-3", task_turns(i), task_id=f"t-{i}", token_cap=1024)
    await sessions.close()  # wait for the background compaction
    context = await sessions.context(ADA, "s-3", token_cap=1024)
    assert context[0].role is ChatRole.SYSTEM and "ORD-" in context[0].content  # the running summary
    assert sum(len(m.content) for m in context) < 4 * 1024
    assert context[-1].content == "ORD-39 shipped"


async def test_model_summarizer_uses_the_model_and_falls_back() -> None:
    script = Script.model_validate(
        {"name": "summary", "rules": [{"then": {"answer": "User shipped orders."}}]}
    )
    async with ScriptedModelServer(script) as server:
        model = OpenAICompatibleModel(server.base_url, "m")
        assert await ModelSummarizer(model)([Turn.user("ship ORD-1")]) == "User shipped orders."
        await model.aclose()
    down = OpenAICompatibleModel(server.base_url, "m", max_retries=1)
    text = await ModelSummarizer(down)([Turn.user("ship ORD-1")])
    await down.aclose()
    assert "ship ORD-1" in text  # deterministic fallback


SPEC: dict[str, Any] = {
    "slug": "fulfillment",
    "display_name": "F",
    "description": "d",
    "system_prompt": "p",
    "rate_limits": {"user": {"requests_per_second": 0.5, "burst": 2}, "tenant": {"requests_per_second": 100}},
}


async def test_admission_refuses_beyond_the_user_limit_with_retry_info(
    redis_client: redis_asyncio.Redis,
) -> None:
    admission = RunAdmission(RateLimiter(redis_client), parse_spec(SPEC), Settings.from_env({}))
    await admission.admit(ADA)
    await admission.admit(ADA)
    with pytest.raises(ResourceExhausted) as caught:
        await admission.admit(ADA)
    assert caught.value.reason == "RATE_LIMITED" and caught.value.metadata["limit"] == "user"
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 2.0
    await admission.admit(Caller("acme", "bob"))  # another user has their own bucket


def test_same_bucket_from_spec_and_environment_takes_the_tighter_rate() -> None:
    settings = Settings.from_env({"AGENTMESH_RATE_LIMIT_USER": "10/s:50"})
    limits = run_limits(parse_spec(SPEC), settings, ADA)
    user = [limit for limit in limits if limit.name == "user"]
    assert len(user) == 1 and (user[0].per_second, user[0].burst) == (0.5, 2)

"""A caller's value never comes back whole in an error: a 100k-character id is quoted cut short."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from agentmesh.kit.errors import MAX_MESSAGE_CHARS
from agentmesh.v1 import agent_service_pb2 as pb
from agentmesh.v1 import tool_registry_service_pb2 as rs
from tests.integration.agents.conftest import DOMAINS, AgentFactory
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

HUGE = "a" * 100_000


async def _answer(call: Callable[[], Awaitable[Any]]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()
    return caught.value


def _assert_not_echoed(error: grpc.aio.AioRpcError) -> None:
    assert error.code() in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}, error.details()
    assert len(error.details() or "") <= MAX_MESSAGE_CHARS + 40
    trailing = sum(len(value) for _, value in error.trailing_metadata() or ())
    assert trailing < 8 * 1024, "the status details carry the caller's value whole"


async def test_agent_errors_quote_a_huge_id_cut_short(agent: AgentFactory) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (_, stub):
        calls = [
            lambda: stub.GetTask(pb.GetTaskRequest(task_id=HUGE), timeout=10),
            lambda: stub.CancelTask(pb.CancelTaskRequest(task_id=HUGE), timeout=10),
            lambda: stub.ResumeTask(
                pb.ResumeTaskRequest(task_id=HUGE, action_id=HUGE, decision=pb.ApprovalDecision()), timeout=10
            ),
            lambda: stub.DeleteSession(pb.DeleteSessionRequest(session_id=HUGE), timeout=10),
        ]
        for call in calls:
            _assert_not_echoed(await _answer(call))


async def test_registry_errors_quote_a_huge_name_cut_short(registry: Registry) -> None:
    for call in (
        lambda: registry.stub.GetTool(rs.GetToolRequest(name=HUGE)),
        lambda: registry.stub.GetTool(rs.GetToolRequest(name="crm_get_customer", version=HUGE)),
        lambda: registry.stub.GetAgent(rs.GetAgentRequest(domain=HUGE)),
    ):
        _assert_not_echoed(await _answer(call))

"""AgentService on real parts: Run and the durable path, bad input, memory, usage, the card."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from agentmesh.kit import metadata as md
from agentmesh.kit.auth import Principal
from agentmesh.kit.errors import from_rpc_error
from agentmesh.kit.net import free_port
from agentmesh.v1 import agent_service_pb2 as pb
from agentmesh.v1 import task_pb2
from agents.model.script import Script
from agents.scripted_model import ScriptedModelServer
from tests.integration.agents.conftest import DOMAINS, FIXTURE_DOMAINS, AgentFactory
from tests.support.auth import DEFAULT_SCOPES, bearer, issuer
from tests.support.registry import Registry
from tests.support.waiting import until as wait_until

pytestmark = pytest.mark.integration

ORDER = (
    "Ship order ORD-12345: 2 x ABC-001 to Ada Lovelace, 12 Analytical Street, London, SW1A 1AA, GB; "
    "notify ada@example.com"
)

# A delegation three agents deep (fulfillment allows 2).
# Minted when the test runs, not at import: a delegation token lives minutes, and on a loaded
# machine the CI subset reaches this test later than that (an import-time token had expired).
DEEP_DELEGATION = "{deep_delegation}"


def _deep_delegation() -> str:
    return issuer().delegation_token(
        domain="fulfillment",
        principal=Principal(subject="anonymous", tenant="default", depth=2),
        scopes=(),
        actor="refunds",
    )


def error_of(caught: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> Any:
    return from_rpc_error(caught.value)


async def until(predicate: Any, timeout: float = 30) -> Any:
    """The shared bounded wait, naming the condition (the predicate's name) when it times out."""
    return await wait_until(predicate, what=predicate.__name__, timeout=timeout, interval=0.1)


async def test_fulfillment_run_with_side_effects(example_tools: dict[str, Any], agent: AgentFactory) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (_, stub):
        reply = await stub.Run(pb.RunRequest(instruction=ORDER), timeout=60)
    task = reply.task
    assert task.state == task_pb2.TASK_STATE_COMPLETED, task
    assert "fulfilled" in task.final_answer, [s.result_json for s in task.steps]
    assert [s.tool_name for s in task.steps if s.kind == task_pb2.STEP_KIND_TOOL_CALL] == [
        "inventory_check",
        "inventory_reserve",
        "shipping_create_shipment",
        "email_send",
    ]
    assert all(
        s.outcome == task_pb2.TOOL_OUTCOME_OK for s in task.steps if s.kind == task_pb2.STEP_KIND_TOOL_CALL
    )
    assert task.usage.iterations == 5 and task.usage.tool_calls == 4 and task.usage.total_tokens > 0
    reservations = example_tools["inventory"].state["reservations"]
    assert any(r["order_id"] == "ORD-12345" and r["qty"] == 2 for r in reservations), reservations
    outbox = json.dumps(example_tools["email"].state, default=str)
    assert "ada@example.com" in outbox and "ORD-12345" in outbox
    assert "scripted:e2e" in task.steps[0].result_json


async def test_card_is_served_and_registered(
    registry: Registry, agent: AgentFactory, example_tools: Any
) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (process, stub):
        card = await stub.GetAgentCard(pb.GetAgentCardRequest())
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{process.host.http_port}/.well-known/agentmesh-card.json"
            ) as response,
        ):
            document = await response.json()
        await asyncio.wait_for(process.registered.wait(), 30)
    assert card.domain == "fulfillment" and card.caps.max_iterations == 12 and card.model == "scripted"
    assert document["domain"] == "fulfillment" and document["endpoint"] == card.endpoint
    from agentmesh.v1 import tool_registry_service_pb2 as rs

    stored = await registry.stub.GetAgent(rs.GetAgentRequest(domain="fulfillment"))
    assert stored.endpoint == card.endpoint


@pytest.mark.parametrize(
    ("request_", "metadata", "code", "reason", "fields"),
    [
        (pb.RunRequest(), [], "INVALID_ARGUMENT", "INVALID_REQUEST", {"instruction"}),
        (
            pb.RunRequest(instruction="x" * (32 * 1024 + 1)),
            [],
            "INVALID_ARGUMENT",
            "INVALID_REQUEST",
            {"instruction"},
        ),
        (
            pb.RunRequest(instruction="ok", session_id="no spaces allowed", labels={"agentmesh.x": "1"}),
            [],
            "INVALID_ARGUMENT",
            "INVALID_REQUEST",
            {"session_id", "labels['agentmesh.x']"},
        ),
        (
            pb.RunRequest(instruction="ok", limits=task_pb2.Limits(max_iterations=99)),
            [],
            "INVALID_ARGUMENT",
            "LIMIT_ABOVE_CAP",
            {"limits.max_iterations"},
        ),
        (
            pb.RunRequest(instruction="ok"),
            [(md.AUTHORIZATION, "Bearer not-a-token")],
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            set(),
        ),
        (
            pb.RunRequest(instruction="ok"),
            [(md.AUTHORIZATION, f"Bearer {DEEP_DELEGATION}")],
            "FAILED_PRECONDITION",
            "DELEGATION_TOO_DEEP",
            set(),
        ),
    ],
)
async def test_bad_input_gets_a_clear_status(
    agent: AgentFactory,
    request_: pb.RunRequest,
    metadata: list[tuple[str, str]],
    code: str,
    reason: str,
    fields: set[str],
) -> None:
    metadata = [(key, value.replace(DEEP_DELEGATION, _deep_delegation())) for key, value in metadata]
    async with agent(DOMAINS / "fulfillment.yaml") as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Run(request_, metadata=metadata, timeout=10)
    error = error_of(caught)
    assert caught.value.code().name == code and error.reason == reason
    assert {v.field for v in error.violations} == fields
    if reason == "LIMIT_ABOVE_CAP":
        assert error.metadata == {"cap": "max_iterations", "max": "12"}


async def test_unreachable_model_fails_the_task_with_model_error(
    agent: AgentFactory, example_tools: Any
) -> None:
    async with agent(DOMAINS / "fulfillment.yaml", model_url=f"http://127.0.0.1:{free_port()}/v1") as (
        _,
        stub,
    ):
        started = time.monotonic()
        reply = await stub.Run(pb.RunRequest(instruction=ORDER), timeout=30)
    assert time.monotonic() - started < 20
    assert reply.task.state == task_pb2.TASK_STATE_FAILED
    assert reply.task.stop_reason == task_pb2.STOP_REASON_MODEL_ERROR
    assert reply.task.error.reason == "DEPENDENCY_UNAVAILABLE"


MISBEHAVING = {
    "name": "misbehaving",
    "rules": [
        {"times": 1, "then": {"empty": True}},
        {
            "when": {"not_called": ["drop_tables"]},
            "then": {"tool_calls": [{"name": "drop_tables", "arguments": {}}]},
        },
        {
            "when": {"last_result": {"tool": "drop_tables", "status": "DENIED"}},
            "then": {
                "tool_calls": [
                    {"name": "inventory_check", "arguments": {"sku": "ABC-001", "warehouse": "north"}}
                ]
            },
        },
        {
            "when": {"last_result": {"tool": "inventory_check", "status": "INVALID_ARGUMENT"}},
            "then": {"tool_calls": [{"name": "inventory_check", "arguments": {"sku": "ABC-001"}}]},
        },
        {
            "when": {"last_result": {"tool": "inventory_check", "status": "OK"}},
            "then": {"answer": "{{ result.inventory_check.available }} left"},
        },
    ],
}


async def test_malformed_answers_become_observations(agent: AgentFactory, example_tools: Any) -> None:
    async with ScriptedModelServer(Script.model_validate(MISBEHAVING)) as bad_model:
        spec = yaml.safe_load((FIXTURE_DOMAINS / "trainee.yaml").read_text())
        async with agent(spec, model_url=bad_model.base_url) as (_, stub):
            reply = await stub.Run(pb.RunRequest(instruction="check ABC-001"), timeout=60)
    task = reply.task
    assert task.state == task_pb2.TASK_STATE_COMPLETED and task.final_answer == "10 left", task
    outcomes = [
        (s.tool_name, task_pb2.ToolOutcome.Name(s.outcome))
        for s in task.steps
        if s.kind == task_pb2.STEP_KIND_TOOL_CALL
    ]
    assert outcomes == [
        ("drop_tables", "TOOL_OUTCOME_DENIED"),
        ("inventory_check", "TOOL_OUTCOME_INVALID_ARGUMENTS"),
        ("inventory_check", "TOOL_OUTCOME_OK"),
    ]
    assert task.steps[0].status_code == "MALFORMED_RESPONSE"
    invalid = json.loads(
        next(s.result_json for s in task.steps if s.outcome == task_pb2.TOOL_OUTCOME_INVALID_ARGUMENTS)
    )
    assert "warehouse" in json.dumps(invalid["violations"])


async def test_session_memory_usage_and_delete(agent: AgentFactory, example_tools: Any) -> None:
    metadata = bearer(user="ada")
    async with agent(DOMAINS / "fulfillment.yaml") as (_, stub):
        first = await stub.Run(
            pb.RunRequest(instruction=ORDER, session_id="s-1"), metadata=metadata, timeout=60
        )
        second = await stub.Run(
            pb.RunRequest(instruction="thanks", session_id="s-1"), metadata=metadata, timeout=60
        )
        usage = await stub.GetUsage(pb.GetUsageRequest(session_id="s-1"), metadata=metadata)
        other = await stub.GetUsage(pb.GetUsageRequest(session_id="s-1"), metadata=bearer(user="bob"))
        await stub.DeleteSession(pb.DeleteSessionRequest(session_id="s-1"), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeleteSession(pb.DeleteSessionRequest(session_id="s-1"), metadata=metadata)
    assert first.task.state == second.task.state == task_pb2.TASK_STATE_COMPLETED
    # The second task's model saw the first's conversation: more prompt tokens for a shorter instruction.
    assert second.task.steps[0].usage.prompt_tokens > first.task.steps[0].usage.prompt_tokens
    assert (
        usage.tasks == 2
        and usage.usage.iterations == first.task.usage.iterations + second.task.usage.iterations
    )
    assert usage.usage.tool_calls == 4 and other.tasks == 0
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and error_of(caught).reason == "SESSION_NOT_FOUND"


async def test_repeated_request_id_returns_the_same_task(
    agent: AgentFactory, example_tools: dict[str, Any]
) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (_, stub):
        first = await stub.Run(pb.RunRequest(instruction=ORDER, request_id="r-1"), timeout=60)
        again = await stub.Run(pb.RunRequest(instruction=ORDER, request_id="r-1"), timeout=60)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Run(pb.RunRequest(instruction="something else", request_id="r-1"), timeout=60)
    assert first.task.task_id == again.task.task_id and len(again.task.steps) == len(first.task.steps)
    assert len(example_tools["inventory"].state["reservations"]) == 1
    assert error_of(caught).reason == "IDEMPOTENCY_KEY_REUSED"


async def test_run_hands_off_at_its_deadline_and_the_worker_finishes(
    agent: AgentFactory, example_tools: Any
) -> None:
    async with agent(FIXTURE_DOMAINS / "trainee.yaml") as (_, stub):
        reply = await stub.Run(pb.RunRequest(instruction="take your time"), timeout=0.8)
        assert reply.task.state == task_pb2.TASK_STATE_WORKING
        assert reply.task.stop_reason == task_pb2.STOP_REASON_HANDED_OFF

        async def finished() -> task_pb2.Task | None:
            task = await stub.GetTask(pb.GetTaskRequest(task_id=reply.task.task_id))
            return task if task.state == task_pb2.TASK_STATE_COMPLETED else None

        task = await until(finished)
    assert task.final_answer == "done, slowly" and task.attempt >= 2


async def test_submit_watch_list_and_cancel(agent: AgentFactory, example_tools: Any) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (_, stub):
        submitted = await stub.SubmitTask(pb.SubmitTaskRequest(instruction=ORDER, request_id="sub-1"))
        events = [event async for event in stub.WatchTask(pb.WatchTaskRequest(task_id=submitted.task_id))]
        listed = await stub.ListTasks(pb.ListTasksRequest())
        with pytest.raises(grpc.aio.AioRpcError) as done:
            await stub.CancelTask(pb.CancelTaskRequest(task_id=submitted.task_id))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.SubmitTask(pb.SubmitTaskRequest(instruction=ORDER))
        with pytest.raises(grpc.aio.AioRpcError) as approvers:
            await stub.ListTasks(pb.ListTasksRequest(filter=pb.TASK_FILTER_AWAITING_APPROVAL))
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await stub.GetTask(pb.GetTaskRequest(task_id=submitted.task_id), metadata=bearer(user="eve"))
    assert submitted.state == task_pb2.TASK_STATE_SUBMITTED
    last = events[-1].status_update
    assert last.state == task_pb2.TASK_STATE_COMPLETED and "fulfilled" in last.final_answer
    assert sum(1 for e in events if e.HasField("step_update")) >= 9
    assert [t.task_id for t in listed.tasks] == [submitted.task_id] and not listed.tasks[0].steps
    assert done.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert approvers.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


async def test_refund_above_the_limit_waits_for_approval_then_completes(
    agent: AgentFactory, example_tools: dict[str, Any]
) -> None:
    text = "Customer C-1001 wants a refund of $200.00 on order ORD-12346: it never arrived"
    async with agent(DOMAINS / "refunds.yaml") as (_, stub):
        reply = await stub.Run(pb.RunRequest(instruction=text), timeout=60)
        task = reply.task
        assert task.state == task_pb2.TASK_STATE_INPUT_REQUIRED, task
        assert task.stop_reason == task_pb2.STOP_REASON_AWAITING_APPROVAL
        assert task.pending_action.tool_name == "payments_refund"
        assert json.loads(task.pending_action.arguments_json)["amount_cents"] == 20000
        assert task.steps[0].kind == task_pb2.STEP_KIND_SANITIZE
        approve = pb.ResumeTaskRequest(
            task_id=task.task_id,
            action_id=task.pending_action.action_id,
            decision=pb.ApprovalDecision(approve=True),
        )
        # The requester cannot approve their own refund, with or without the approve scope.
        with pytest.raises(grpc.aio.AioRpcError) as own:
            await stub.ResumeTask(approve)
        with pytest.raises(grpc.aio.AioRpcError) as own_with_scope:
            await stub.ResumeTask(approve, metadata=bearer(scopes=(*DEFAULT_SCOPES, "refunds:approve")))
        # Another user of another tenant, even holding the scope, does not see it.
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await stub.ResumeTask(
                approve, metadata=bearer(user="bob", tenant="other", scopes=("refunds:approve",))
            )
        # Another user of the tenant without the scope neither.
        with pytest.raises(grpc.aio.AioRpcError) as unscoped:
            await stub.ResumeTask(approve, metadata=bearer(user="bob"))
        approver = bearer(user="bob", scopes=("refunds:approve",))
        waiting = await stub.ListTasks(
            pb.ListTasksRequest(filter=pb.TASK_FILTER_AWAITING_APPROVAL), metadata=approver
        )
        seen = await stub.GetTask(pb.GetTaskRequest(task_id=task.task_id), metadata=approver)
        await stub.ResumeTask(approve, metadata=approver)

        async def finished() -> task_pb2.Task | None:
            current = await stub.GetTask(pb.GetTaskRequest(task_id=task.task_id))
            return current if current.state == task_pb2.TASK_STATE_COMPLETED else None

        done = await until(finished)
        events = [e async for e in stub.WatchTask(pb.WatchTaskRequest(task_id=task.task_id))]
    assert own.value.code() == own_with_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_of(own).metadata["scope"] == "refunds:approve"
    assert foreign.value.code() == unscoped.value.code() == grpc.StatusCode.NOT_FOUND
    assert [t.task_id for t in waiting.tasks] == [task.task_id] and seen.owner == "anonymous"
    refunds = example_tools["payments"].state["ch_ORD-12346"]["refunds"]
    assert [r["amount_cents"] for r in refunds] == [20000] and refunds[0]["approved"] is True
    assert "Refunded $200" in done.final_answer
    decisions = [e.approval for e in events if e.HasField("approval")]
    assert [(d.approved, d.approver) for d in decisions] == [(True, "bob")]


SLOW_LOOP = {
    "name": "slow-loop",
    "rules": [
        {"then": {"tool_calls": [{"name": "inventory_check", "arguments": {"sku": "ABC-001"}}], "delay": 0.3}}
    ],
}


async def test_cancel_a_running_task(agent: AgentFactory, example_tools: Any) -> None:
    async with (
        ScriptedModelServer(Script.model_validate(SLOW_LOOP)) as slow,
        agent(FIXTURE_DOMAINS / "trainee.yaml", model_url=slow.base_url) as (_, stub),
    ):
        task = await stub.SubmitTask(pb.SubmitTaskRequest(instruction="check", request_id="slow-1"))

        async def started() -> bool:
            current = await stub.GetTask(pb.GetTaskRequest(task_id=task.task_id))
            return len(current.steps) >= 2

        await until(started)
        await stub.CancelTask(pb.CancelTaskRequest(task_id=task.task_id, reason="changed my mind"))

        async def canceled() -> task_pb2.Task | None:
            current = await stub.GetTask(pb.GetTaskRequest(task_id=task.task_id))
            return current if current.state == task_pb2.TASK_STATE_CANCELED else None

        done = await until(canceled)
    assert done.stop_reason == task_pb2.STOP_REASON_CANCELED and "changed my mind" in done.status_message
    assert done.usage.iterations < 6  # stopped within a step, long before its budget


FINISHED = (task_pb2.TASK_STATE_COMPLETED, task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_REJECTED)


async def test_a_rejected_refund_is_saved_and_the_task_completes(
    agent: AgentFactory, example_tools: dict[str, Any]
) -> None:
    # The rejection is a step recorded before the resumed loop runs: it must be checkpointed
    # like any other (a lost one would leave a gap and fail every later checkpoint).
    text = "Customer C-1001 wants a refund of $200.00 on order ORD-12346: it never arrived"
    async with agent(DOMAINS / "refunds.yaml") as (_, stub):
        task = (await stub.Run(pb.RunRequest(instruction=text), timeout=60)).task
        assert task.state == task_pb2.TASK_STATE_INPUT_REQUIRED, task
        await stub.ResumeTask(
            pb.ResumeTaskRequest(
                task_id=task.task_id,
                action_id=task.pending_action.action_id,
                decision=pb.ApprovalDecision(approve=False, reason="not without a receipt"),
            )
        )

        async def finished() -> task_pb2.Task | None:
            current = await stub.GetTask(pb.GetTaskRequest(task_id=task.task_id))
            return current if current.state in FINISHED else None

        done = await until(finished)
    assert done.state == task_pb2.TASK_STATE_COMPLETED, done
    assert [s.index for s in done.steps] == list(range(len(done.steps)))
    outcomes = [s.outcome for s in done.steps if s.tool_name == "payments_refund"]
    assert outcomes == [task_pb2.TOOL_OUTCOME_AWAITING_APPROVAL, task_pb2.TOOL_OUTCOME_REJECTED]
    assert example_tools["payments"].state["ch_ORD-12346"]["refunds"] == []

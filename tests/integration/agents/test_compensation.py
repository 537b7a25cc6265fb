"""Compensations and dead-lettered side effects on real parts: valkey, the registry, the example
inventory/shipping/email tools with their ledgers, the scripted model, the agent's executor and queue.

A worker "dies" the way a SIGKILLed process leaves Redis: its attempt stops between two steps
(`DiesAt`, a fault injected at the checkpoint), without heartbeats, hand-back or failure record;
the next start counts the lost attempt (max_attempts=1: the task is dead-lettered).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app as cli
from agentmesh.v1 import agent_service_pb2 as pb
from agentmesh.v1 import task_pb2
from agents.requests import check_submit_request
from agents.server import AgentProcess
from agents.spec import DomainSpec, load_spec
from memory.task_effects import arguments_digest
from memory.task_execution import Checkpointer
from memory.task_worker import TaskWorker
from agentmesh.kit.testing import local_settings
from agents.scripted_model import ScriptedModelServer
from tests.integration.agents.conftest import DOMAINS, AgentFactory
from tests.support.registry import Registry
from tests.support.task_helpers import OWNER, TENANT, claim, reclaim_one

pytestmark = pytest.mark.integration

ORDER = (
    "Ship order ORD-12345: 2 x ABC-001 to Ada Lovelace, 12 Analytical Street, London, SW1A 1AA, GB; "
    "notify ada@example.com"
)
COMPENSATION = task_pb2.STEP_KIND_COMPENSATION
FAST = {"claim_idle_timeout_s": 1.0, "queue_shards": 2, "max_attempts": 1}


@pytest.fixture
async def fulfillment(
    registry: Registry, redis_url: str, model: ScriptedModelServer, example_tools: dict[str, Any]
) -> AsyncIterator[AgentProcess]:
    """The fulfillment agent's parts (executor, queue with its dead-letter settlement, tools)
    without its server and worker, so the test decides who runs each attempt."""
    settings = local_settings(
        redis_url=redis_url,
        registry=f"127.0.0.1:{registry.host.grpc_port}",
        model_base_url=model.base_url,
        model_name="scripted",
        **FAST,
    )
    process = AgentProcess(settings, load_spec(DOMAINS / "fulfillment.yaml"))
    yield process
    await process._close()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return value


def ledger(tools: dict[str, Any]) -> list[tuple[str, int, bool]]:
    return [(r["order_id"], r["qty"], r["released"]) for r in tools["inventory"].state["reservations"]]


class Died(Exception):
    """The injected death of a worker."""


class DiesAt:
    """The executor's checkpointer, until the step of `tool` (after its checkpoint, or before it:
    the call was made, its result never saved)."""

    def __init__(self, inner: Checkpointer, tool: str, *, after_checkpoint: bool) -> None:
        self.inner, self.tool, self.after = inner, tool, after_checkpoint

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def save(self, step: task_pb2.Step, **kwargs: Any) -> bool:
        if step.tool_name == self.tool and not self.after:
            raise Died(f"died after calling {self.tool}, before its checkpoint")
        canceled = await self.inner.save(step, **kwargs)
        if step.tool_name == self.tool:
            raise Died(f"died right after checkpointing {self.tool}")
        return canceled


async def _die_once(process: AgentProcess, request_id: str, *, tool: str, after_checkpoint: bool) -> str:
    """Submit the order; its first attempt dies at `tool`; the next start dead-letters it."""
    queue = process.queue
    await queue.ensure_groups()
    request = pb.SubmitTaskRequest(instruction=ORDER, request_id=request_id)
    budget = check_submit_request(process.spec, request)
    task = await queue.submit(request, tenant=TENANT, owner=OWNER, limits=budget.to_proto())
    attempt = await claim(queue, "doomed-worker")
    with pytest.raises(Died):
        await process.executor(attempt.task, DiesAt(attempt.checkpointer, tool, after_checkpoint=after_checkpoint))  # type: ignore[arg-type]


    async def dead_lettered() -> bool:
        # The lease of the dead attempt may outlive its entry's idle time (a checkpoint renewed
        # it): the entry is then left alone ("busy") and comes back after another idle timeout.
        entry = await reclaim_one(queue, "next-worker")
        assert await queue.start(entry, "next-worker") is None  # poisoned: settled, dead-lettered
        snapshot = await queue.store.snapshot(task.task_id)
        return snapshot is not None and snapshot.task.state == task_pb2.TASK_STATE_FAILED

    await until(dead_lettered)
    return task.task_id


def _show(redis_url: str, task_id: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli,
        ["tasks", "dead-letters", "show", task_id, "--domain", "fulfillment", "--json"],
        env={"REDIS_URL": redis_url, "AGENTMESH_QUEUE_SHARDS": "2", "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.output)
    return shown


async def test_a_task_failing_on_its_budget_after_a_reservation_releases_it(
    example_tools: dict[str, Any], agent: AgentFactory
) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (_, stub):
        submitted = await stub.SubmitTask(
            pb.SubmitTaskRequest(
                instruction=ORDER, request_id="budget-1", limits=task_pb2.Limits(max_tool_calls=2)
            )
        )

        async def finished() -> task_pb2.Task | None:
            task = await stub.GetTask(pb.GetTaskRequest(task_id=submitted.task_id, view=task_pb2.TASK_VIEW_FULL))
            return task if task.state == task_pb2.TASK_STATE_FAILED else None

        task = await until(finished)
        events = [e async for e in stub.WatchTask(pb.WatchTaskRequest(task_id=submitted.task_id))]
    assert task.stop_reason == task_pb2.STOP_REASON_MAX_TOOL_CALLS, task.status_message
    reserve = next(s for s in task.steps if s.tool_name == "inventory_reserve")
    undone = [s for s in task.steps if s.kind == COMPENSATION]
    assert [(s.tool_name, s.compensated_step, s.outcome) for s in undone] == [
        ("inventory_release", reserve.index, task_pb2.TOOL_OUTCOME_OK)
    ]
    assert ledger(example_tools) == [("ORD-12345", 2, True)]
    assert example_tools["inventory"].state["stock"]["ABC-001"] == 10
    assert example_tools["shipping"].state == []  # the budget stopped it before shipping
    recorded = [e.step_update.step for e in events if e.HasField("step_update") and e.step_update.finished]
    assert [s.kind for s in recorded].count(COMPENSATION) == 1  # the compensation is a task event


async def test_a_dead_lettered_task_releases_its_reservation_and_shows_its_effects(
    fulfillment: AgentProcess, example_tools: dict[str, Any], redis_url: str
) -> None:
    task_id = await _die_once(fulfillment, "dies-after-reserve", tool="inventory_reserve", after_checkpoint=True)
    task = (await fulfillment.queue.store.snapshot(task_id, steps=True)).task  # type: ignore[union-attr]
    assert task.state == task_pb2.TASK_STATE_FAILED
    assert task.stop_reason == task_pb2.STOP_REASON_DEAD_LETTERED
    reserve = next(s for s in task.steps if s.tool_name == "inventory_reserve")
    undone = [s for s in task.steps if s.kind == COMPENSATION]
    assert [(s.tool_name, s.compensated_step, s.outcome) for s in undone] == [
        ("inventory_release", reserve.index, task_pb2.TOOL_OUTCOME_OK)
    ]
    assert json.loads(undone[0].arguments_json) == {"reservation_id": "res_1"}
    assert ledger(example_tools) == [("ORD-12345", 2, True)]  # reserved once, released once
    assert example_tools["inventory"].state["stock"]["ABC-001"] == 10

    shown = await asyncio.to_thread(_show, redis_url, task_id)
    assert shown["stop_reason"] == "STOP_REASON_DEAD_LETTERED" and shown["dead_letter"]["task_id"] == task_id
    [effect] = shown["effects"]  # inventory_check is READ_ONLY: not an effect
    assert effect["tool"] == "inventory_reserve" and effect["side_effect"] == "KEYED"
    assert effect["status"] == "compensated" and "inventory_release" in effect["compensation"]
    assert effect["arguments_sha256"] == arguments_digest(reserve.arguments_json)
    assert effect["idempotency_key"] == f"{task_id}:{reserve.index}"
    assert '"reservation_id":"res_1"' in effect["result"]
    assert shown["dead_letter"]["effects"] == [
        {
            "step": reserve.index,
            "tool": "inventory_reserve",
            "status": "compensated",
            "arguments_sha256": effect["arguments_sha256"],
        }
    ]

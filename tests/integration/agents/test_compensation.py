"""Compensations and dead-lettered side effects on real parts: valkey, the registry, the example
inventory/shipping/email tools with their ledgers, the scripted model, the agent's executor and queue.

A worker "dies" the way a SIGKILLed process leaves Redis: its attempt stops between two steps
(`DiesAt`, a fault injected at the checkpoint), without heartbeats, hand-back or failure record;
the next start counts the lost attempt (max_attempts=1: the task is dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agentmesh.cli.main import app as cli
from agentmesh.kit.testing import local_settings
from agentmesh.v1 import agent_service_pb2 as pb
from agentmesh.v1 import task_pb2
from agents.caller import Caller
from agents.model.script import Script
from agents.requests import check_submit_request, new_task
from agents.scripted_model import ScriptedModelServer
from agents.server import AgentProcess
from agents.spec import DomainSpec, load_spec, parse_spec
from memory.tasks.effects import json_arguments_digest
from memory.tasks.execution import Checkpointer
from memory.tasks.worker import TaskWorker
from tests.integration.agents.conftest import DOMAINS, AgentFactory
from tests.support.auth import DEFAULT_SCOPES, key_path
from tests.support.registry import Registry
from tests.support.task_helpers import OWNER, TENANT, claim, reclaim_one

pytestmark = pytest.mark.integration

ORDER = (
    "Ship order ORD-12345: 2 x ABC-001 to Ada Lovelace, 12 Analytical Street, London, SW1A 1AA, GB; "
    "notify ada@example.com"
)
COMPENSATION = task_pb2.STEP_KIND_COMPENSATION
FAST = {"claim_idle_timeout_s": 1.0, "queue_shards": 2, "max_attempts": 1}


Parts = Callable[[DomainSpec], contextlib.AbstractAsyncContextManager[AgentProcess]]


@pytest.fixture
def parts(
    registry: Registry, redis_url: str, model: ScriptedModelServer, example_tools: dict[str, Any]
) -> Parts:
    """An agent's parts (executor, queue with its dead-letter settlement, tools) for `spec`,
    without its server and worker, so the test decides who runs each attempt."""

    @contextlib.asynccontextmanager
    async def build(spec: DomainSpec) -> AsyncIterator[AgentProcess]:
        settings = local_settings(
            redis_url=redis_url,
            registry=f"127.0.0.1:{registry.host.grpc_port}",
            model_base_url=model.base_url,
            model_name="scripted",
            signing_key=key_path(),
            **FAST,
        )
        process = AgentProcess(settings, spec)
        try:
            yield process
        finally:
            await process._close()

    return build


@pytest.fixture
async def fulfillment(parts: Parts) -> AsyncIterator[AgentProcess]:
    async with parts(load_spec(DOMAINS / "fulfillment.yaml")) as process:
        yield process


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
    # Submitted straight to the queue: the task keeps its caller's authority in its labels, as the
    # handler writes them (the worker's tool calls are checked against these scopes).
    request.labels.update(Caller(tenant=TENANT, user=OWNER, scopes=frozenset(DEFAULT_SCOPES)).labels())
    task = await queue.submit(new_task(request), tenant=TENANT, owner=OWNER, limits=budget.to_proto())
    attempt = await claim(queue, "doomed-worker")
    with pytest.raises(Died):
        await process.executor(
            attempt.task, DiesAt(attempt.checkpointer, tool, after_checkpoint=after_checkpoint)
        )  # type: ignore[arg-type]

    async def dead_lettered() -> bool:
        # The lease of the dead attempt may outlive its entry's idle time (a checkpoint renewed
        # it): the entry is then left alone ("busy") and comes back after another idle timeout.
        entry = await reclaim_one(queue, "next-worker")
        assert await queue.start(entry, "next-worker") is None  # poisoned: settled, dead-lettered
        snapshot = await queue.store.snapshot(task.task_id)
        return snapshot is not None and snapshot.task.state == task_pb2.TASK_STATE_FAILED

    await until(dead_lettered)
    return task.task_id


def _show(redis_url: str, task_id: str, *options: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        ["tasks", "dead-letters", "show", task_id, "--domain", "fulfillment", *options],
        env={"REDIS_URL": redis_url, "AGENTMESH_QUEUE_SHARDS": "2", "COLUMNS": "250"},
    )
    return result.exit_code, result.output


def _show_json(redis_url: str, task_id: str) -> dict[str, Any]:
    code, output = _show(redis_url, task_id, "--json")
    assert code == 0, output
    shown: dict[str, Any] = json.loads(output)
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
            task = await stub.GetTask(
                pb.GetTaskRequest(task_id=submitted.task_id, view=task_pb2.TASK_VIEW_FULL)
            )
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
    task_id = await _die_once(
        fulfillment, "dies-after-reserve", tool="inventory_reserve", after_checkpoint=True
    )
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

    shown = await asyncio.to_thread(_show_json, redis_url, task_id)
    assert shown["stop_reason"] == "STOP_REASON_DEAD_LETTERED" and shown["dead_letter"]["task_id"] == task_id
    [effect] = shown["effects"]  # inventory_check is READ_ONLY: not an effect
    assert effect["tool"] == "inventory_reserve" and effect["side_effect"] == "KEYED"
    assert effect["status"] == "compensated" and "inventory_release" in effect["compensation"]
    assert effect["arguments_sha256"] == json_arguments_digest(reserve.arguments_json)
    assert effect["idempotency_key"] == f"{task_id}:{reserve.index}"
    assert '"reservation_id":"res_1"' in effect["result"]
    code, readable = await asyncio.to_thread(_show, redis_url, task_id)
    assert code == 0 and "STOP_REASON_DEAD_LETTERED" in readable
    assert (
        "inventory_reserve" in readable
        and "compensated" in readable
        and f"{task_id}:{reserve.index}" in readable
    )
    code, missing = await asyncio.to_thread(_show, redis_url, "00000000-0000-4000-8000-000000000000")
    assert code == 1 and "no task" in missing
    assert shown["dead_letter"]["effects"] == [
        {
            "step": reserve.index,
            "tool": "inventory_reserve",
            "status": "compensated",
            "arguments_sha256": effect["arguments_sha256"],
            "result": effect["result"],
        }
    ]


def without_in_doubt() -> DomainSpec:
    """The shipped fulfillment domain without its in-doubt compensation: a reservation in doubt is
    left for the operator (listed with its key), not released."""
    document = yaml.safe_load((DOMAINS / "fulfillment.yaml").read_text())
    for tool in document["tools"]:
        if tool["name"] == "inventory_reserve":
            del tool["compensation"]["in_doubt"]
    return parse_spec(document)


async def test_a_dead_lettered_reservation_in_doubt_is_released_by_its_key(
    fulfillment: AgentProcess, example_tools: dict[str, Any], redis_url: str
) -> None:
    """The worker died after sending the reservation, before its result was checkpointed: the call
    is in doubt (it did happen). The shipped domain declares an in-doubt compensation, so the
    dead-lettering releases whatever the reservation's idempotency key reserved."""
    task_id = await _die_once(
        fulfillment, "in-doubt-released", tool="inventory_reserve", after_checkpoint=False
    )
    task = (await fulfillment.queue.store.snapshot(task_id, steps=True)).task  # type: ignore[union-attr]
    assert task.stop_reason == task_pb2.STOP_REASON_DEAD_LETTERED
    assert not [s for s in task.steps if s.tool_name == "inventory_reserve"]  # never checkpointed
    [undo] = [s for s in task.steps if s.kind == COMPENSATION]
    in_doubt = undo.compensated_step  # the step the reservation would have been: its key
    assert (undo.tool_name, undo.outcome) == ("inventory_release_reserved", task_pb2.TOOL_OUTCOME_OK)
    assert json.loads(undo.arguments_json) == {"reserve_key": f"{task_id}:{in_doubt}"}
    assert "in-doubt" in undo.summary
    assert ledger(example_tools) == [("ORD-12345", 2, True)]  # reserved once, released once
    assert example_tools["inventory"].state["stock"]["ABC-001"] == 10
    shown = await asyncio.to_thread(_show_json, redis_url, task_id)
    [effect] = shown["effects"]
    assert effect["idempotency_key"] == f"{task_id}:{in_doubt}" and effect["status"] == "compensated"
    assert "inventory_release_reserved" in effect["compensation"]


class DiesAfterAsking:
    """The executor's checkpointer, until the model's turn asking for `tool` is checkpointed: the
    worker dies before sending the call (in doubt to anyone reading the record, never made)."""

    def __init__(self, inner: Checkpointer, tool: str) -> None:
        self.inner, self.tool = inner, tool

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def save(self, step: task_pb2.Step, **kwargs: Any) -> bool:
        canceled = await self.inner.save(step, **kwargs)
        if step.kind == task_pb2.STEP_KIND_MODEL_CALL and f'"{self.tool}"' in step.result_json:
            raise Died(f"died after the model asked for {self.tool}, before calling it")
        return canceled


async def test_an_in_doubt_reservation_that_never_happened_is_released_safely(
    fulfillment: AgentProcess, example_tools: dict[str, Any]
) -> None:
    """In doubt, and in fact never sent: the in-doubt compensation finds nothing under the key and
    changes nothing (why the compensating tool must be safe to call either way)."""
    queue = fulfillment.queue
    await queue.ensure_groups()
    # Another order's reservation, made before: a safe in-doubt compensation never touches it.
    other = {
        "reservation_id": "res_1",
        "order_id": "ORD-99999",
        "sku": "DEF-002",
        "qty": 1,
        "released": False,
    }
    example_tools["inventory"].state["reservations"].append(other)
    request = pb.SubmitTaskRequest(instruction=ORDER, request_id="in-doubt-never-sent")
    budget = check_submit_request(fulfillment.spec, request)
    request.labels.update(Caller(tenant=TENANT, user=OWNER, scopes=frozenset(DEFAULT_SCOPES)).labels())
    task = await queue.submit(new_task(request), tenant=TENANT, owner=OWNER, limits=budget.to_proto())
    attempt = await claim(queue, "doomed-worker")
    with pytest.raises(Died):
        await fulfillment.executor(attempt.task, DiesAfterAsking(attempt.checkpointer, "inventory_reserve"))  # type: ignore[arg-type]

    async def dead_lettered() -> task_pb2.Task | None:
        entry = await reclaim_one(queue, "next-worker")
        assert await queue.start(entry, "next-worker") is None
        snapshot = await queue.store.snapshot(task.task_id, steps=True)
        return snapshot.task if snapshot and snapshot.task.state == task_pb2.TASK_STATE_FAILED else None

    failed = await until(dead_lettered)
    [undo] = [s for s in failed.steps if s.kind == COMPENSATION]
    assert (undo.tool_name, undo.outcome) == ("inventory_release_reserved", task_pb2.TOOL_OUTCOME_OK)
    assert ledger(example_tools) == [("ORD-99999", 1, False)]  # nothing reserved, nothing released
    assert example_tools["inventory"].state["stock"]["ABC-001"] == 10


async def test_a_redriven_task_resumes_with_the_same_idempotency_keys(
    parts: Parts, example_tools: dict[str, Any], redis_url: str
) -> None:
    """The worker died after the reservation was made, before its result was checkpointed: the
    dead letter shows the call in doubt with its key (the domain declares no in-doubt
    compensation); the redrive sends it again with that key, the tool's dedupe replays it, and
    the ledger holds one reservation."""
    async with parts(without_in_doubt()) as fulfillment:
        await _redriven_resumes(fulfillment, example_tools, redis_url)


async def _redriven_resumes(fulfillment: AgentProcess, example_tools: dict[str, Any], redis_url: str) -> None:
    queue = fulfillment.queue
    task_id = await _die_once(
        fulfillment, "dies-in-the-window", tool="inventory_reserve", after_checkpoint=False
    )
    assert ledger(example_tools) == [("ORD-12345", 2, False)]  # the call ran, its result was lost
    shown = await asyncio.to_thread(_show_json, redis_url, task_id)
    [effect] = shown["effects"]
    assert effect["tool"] == "inventory_reserve" and effect["status"] == "in doubt"
    dead = (await queue.store.snapshot(task_id, steps=True)).task  # type: ignore[union-attr]
    assert not [s for s in dead.steps if s.kind == COMPENSATION]  # nothing completed to undo
    [letter] = await queue.dead_letters()
    [redriven] = await queue.redrive([letter.entry_id])
    assert redriven.outcome == "redriven"

    worker = TaskWorker(queue, fulfillment.executor, concurrency=1)
    running = asyncio.create_task(worker.run())

    async def completed() -> task_pb2.Task | None:
        snapshot = await queue.store.snapshot(task_id, steps=True)
        assert snapshot is not None and snapshot.task.state != task_pb2.TASK_STATE_FAILED
        return snapshot.task if snapshot.task.state == task_pb2.TASK_STATE_COMPLETED else None

    try:
        task = await until(completed)
    finally:
        await worker.drain(1)
        await running
    reserve = next(s for s in task.steps if s.tool_name == "inventory_reserve")
    assert f"{task_id}:{reserve.index}" == effect["idempotency_key"]  # the same key, sent again
    assert reserve.outcome == task_pb2.TOOL_OUTCOME_DEDUPLICATED  # the tool replayed it
    assert ledger(example_tools) == [("ORD-12345", 2, False)]  # one reservation, kept
    assert [s["order_id"] for s in example_tools["shipping"].state] == ["ORD-12345"]


async def test_a_failing_compensation_is_recorded_once_and_never_retried(
    parts: Parts, example_tools: dict[str, Any], redis_url: str
) -> None:
    """The compensating tool is not in the registry: the compensation is recorded as failed, the
    task is dead-lettered all the same, and a redrive ends it again without another attempt."""
    document = yaml.safe_load((DOMAINS / "fulfillment.yaml").read_text())
    for tool in document["tools"]:
        if tool["name"] == "inventory_reserve":
            tool["compensation"]["tool"] = "inventory_unreserve"  # nobody serves it
    async with parts(parse_spec(document)) as process:
        queue = process.queue
        task_id = await _die_once(process, "uncompensable", tool="inventory_reserve", after_checkpoint=True)
        task = (await queue.store.snapshot(task_id, steps=True)).task  # type: ignore[union-attr]
        [undo] = [s for s in task.steps if s.kind == COMPENSATION]
        assert undo.tool_name == "inventory_unreserve" and undo.outcome == task_pb2.TOOL_OUTCOME_ERROR
        assert task.stop_reason == task_pb2.STOP_REASON_DEAD_LETTERED
        assert ledger(example_tools) == [("ORD-12345", 2, False)]  # honest: still reserved
        shown = await asyncio.to_thread(_show_json, redis_url, task_id)
        assert [e["status"] for e in shown["effects"]] == ["compensation failed"]

        [letter] = await queue.dead_letters()
        await queue.redrive([letter.entry_id])
        worker = TaskWorker(queue, process.executor, concurrency=1)
        running = asyncio.create_task(worker.run())

        async def failed_again() -> task_pb2.Task | None:
            snapshot = await queue.store.snapshot(task_id, steps=True)
            assert snapshot is not None
            return snapshot.task if snapshot.task.state == task_pb2.TASK_STATE_FAILED else None

        try:
            again = await until(failed_again)
        finally:
            await worker.drain(1)
            await running
    assert [s.index for s in again.steps if s.kind == COMPENSATION] == [undo.index]  # not made again
    assert again.stop_reason == task_pb2.STOP_REASON_DEAD_LETTERED  # the recorded failure
    assert len(again.steps) == len(task.steps)  # the model was not asked to carry on


RESERVE_THEN_REFUND = {
    "name": "reserve-then-refund",
    "rules": [
        {
            "name": "reserve",
            "when": {"not_called": ["inventory_reserve"]},
            "then": {
                "tool_calls": [
                    {
                        "name": "inventory_reserve",
                        "arguments": {"order_id": "ORD-12345", "sku": "ABC-001", "qty": 2},
                    }
                ]
            },
        },
        {
            "name": "refund-above-the-approval-limit",
            "when": {"last_result": {"tool": "inventory_reserve", "status": "OK"}},
            "then": {
                "tool_calls": [
                    {
                        "name": "payments_refund",
                        "arguments": {
                            "charge_id": "ch_ORD-12346",
                            "amount_cents": 20000,
                            "reason": "never arrived",
                        },
                    }
                ]
            },
        },
        {"name": "done", "when": {}, "then": {"answer": "done"}},
    ],
}


async def test_an_expired_approval_after_a_reservation_releases_it(
    example_tools: dict[str, Any], agent: AgentFactory
) -> None:
    """A pause that expires fails the task (the sweeper): its completed reservation is released."""
    document = yaml.safe_load((DOMAINS / "fulfillment.yaml").read_text())
    document["tools"] = [t for t in document["tools"] if t["name"] == "inventory_reserve"]
    document["tools"].append({"name": "payments_refund"})
    document["approval_timeout"] = "1s"
    async with (
        ScriptedModelServer(Script.model_validate(RESERVE_THEN_REFUND)) as model,
        agent(parse_spec(document), model_url=model.base_url, claim_idle_timeout_s=1.0) as (_, stub),
    ):
        submitted = await stub.SubmitTask(
            pb.SubmitTaskRequest(instruction="reserve, refund", request_id="exp-1")
        )

        async def state_is(state: int) -> task_pb2.Task | None:
            request = pb.GetTaskRequest(task_id=submitted.task_id, view=task_pb2.TASK_VIEW_FULL)
            task = await stub.GetTask(request)
            return task if task.state == state else None

        await until(lambda: state_is(task_pb2.TASK_STATE_INPUT_REQUIRED))
        assert ledger(example_tools) == [("ORD-12345", 2, False)]  # reserved, waiting for a human
        task = await until(lambda: state_is(task_pb2.TASK_STATE_FAILED))
    assert task.stop_reason == task_pb2.STOP_REASON_EXPIRED
    reserve = next(s for s in task.steps if s.tool_name == "inventory_reserve")
    undone = [s for s in task.steps if s.kind == COMPENSATION]
    assert [(s.tool_name, s.compensated_step, s.outcome) for s in undone] == [
        ("inventory_release", reserve.index, task_pb2.TOOL_OUTCOME_OK)
    ]
    assert ledger(example_tools) == [("ORD-12345", 2, True)]
    assert example_tools["payments"].state["ch_ORD-12346"]["refunds"] == []  # never approved, never made

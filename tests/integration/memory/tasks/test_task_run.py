"""Run: inline execution with a task record; the durable path takes over when it must wait."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.requests import new_task
from memory import keys
from memory.connection import AnyRedis
from memory.tasks.admission import NewTask
from memory.tasks.execution import Checkpointer, Completed, InputRequired, TaskOutcome, run_attempt
from memory.tasks.queue import TaskQueue
from memory.tasks.sweeper import TaskSweeper
from tests.support.task_helpers import OWNER, TENANT, claim, read_one, steps_executor, task_key
from tests.support.waiting import until

pytestmark = pytest.mark.integration


def _run_request(request_id: str = "") -> NewTask:
    return new_task(agent_service_pb2.RunRequest(instruction="where is order 7?", request_id=request_id))


async def _outbox_size(client: AnyRedis, queue: TaskQueue) -> int:
    return sum([await client.zcard(keys.outbox(queue.domain, s)) for s in queue.shards()])


async def test_run_completes_inline_with_a_short_lived_record(queue: TaskQueue, client: AnyRedis) -> None:
    task = await queue.run(_run_request(), steps_executor(2), tenant=TENANT, owner=OWNER, timeout_s=10)
    assert task.state == task_pb2.TASK_STATE_COMPLETED and len(task.steps) == 2 and task.attempt == 1
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert stored.final_answer == task.final_answer
    assert 0 < await client.ttl(task_key(queue, task.task_id)) <= queue.config.run_retention_s
    assert await _outbox_size(client, queue) == 0
    assert (await queue.stats()).depth == 0  # it never touched the queue


async def test_a_repeated_run_returns_the_same_task_without_running_again(queue: TaskQueue) -> None:
    calls = 0

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        nonlocal calls
        calls += 1
        return Completed("42")

    first = await queue.run(_run_request("r-1"), execute, tenant=TENANT, owner=OWNER, timeout_s=10)
    again = await queue.run(_run_request("r-1"), execute, tenant=TENANT, owner=OWNER, timeout_s=10)
    assert again.task_id == first.task_id and again.final_answer == "42" and calls == 1


async def test_run_past_its_deadline_continues_on_the_durable_path(
    queue: TaskQueue, client: AnyRedis
) -> None:
    executed: list[tuple[int, int]] = []

    async def slow(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        for index in range(checkpoint.next_index, 3):
            executed.append((index, checkpoint.attempt))
            if checkpoint.attempt == 1 and index == 1:
                await asyncio.sleep(30)  # the Run deadline cuts this step short
            await checkpoint.save(task_pb2.Step(index=index))
        return Completed("finished by a worker")

    task = await queue.run(_run_request(), slow, tenant=TENANT, owner=OWNER, timeout_s=0.5)
    assert task.state == task_pb2.TASK_STATE_WORKING
    assert task.stop_reason == task_pb2.STOP_REASON_HANDED_OFF and len(task.steps) == 1
    assert await client.ttl(task_key(queue, task.task_id)) == -1  # a live task does not expire
    attempt = await claim(queue)  # queued at once, no idle timeout to wait for
    assert attempt.task_id == task.task_id and attempt.number == 2
    done = await run_attempt(attempt, slow)
    assert done.final_answer == "finished by a worker"
    assert executed == [(0, 1), (1, 1), (1, 2), (2, 2)]  # step 0 (checkpointed) never ran again
    snapshot = await queue.store.snapshot(task.task_id)
    assert snapshot is not None and snapshot.fails == 0
    ttl = await client.ttl(task_key(queue, task.task_id))
    assert queue.config.run_retention_s < ttl <= queue.config.retention_s  # durable retention now


async def test_run_that_needs_approval_returns_the_paused_task(queue: TaskQueue, client: AnyRedis) -> None:
    pending = task_pb2.PendingAction(
        action_id="a1", kind=task_pb2.PENDING_ACTION_KIND_APPROVAL, tool_name="x"
    )

    async def ask(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        await checkpoint.save(task_pb2.Step(index=0))
        return InputRequired(pending, message="needs approval")

    task = await queue.run(_run_request(), ask, tenant=TENANT, owner=OWNER, timeout_s=10)
    assert task.state == task_pb2.TASK_STATE_INPUT_REQUIRED and task.pending_action.action_id == "a1"
    assert await _outbox_size(client, queue) == 0
    snapshot = await queue.store.snapshot(task.task_id)
    assert snapshot is not None and snapshot.retention_ms == queue.config.retention_ms
    decision = task_pb2.PendingActionAnswer.Decision(approve=True)
    await queue.resume(
        task_pb2.PendingActionAnswer(task_id=task.task_id, action_id="a1", decision=decision),
        tenant=TENANT,
        owner=OWNER,
    )
    attempt = await claim(queue)
    assert attempt.task_id == task.task_id and [s.index for s in attempt.checkpointer.steps] == [0]
    assert attempt.checkpointer.resumption is not None  # the approval, read once by the resumed attempt
    await attempt.checkpointer.save(task_pb2.Step(index=1))
    snapshot = await queue.store.snapshot(task.task_id)
    assert snapshot is not None and snapshot.resumption is None  # consumed by the first step after it
    await attempt.finish(Completed("approved and done"))


async def test_a_crashed_run_is_recovered_by_the_sweeper(queue: TaskQueue) -> None:
    # Created, then its process "dies".
    created = await queue.admission._create("run", _run_request(), TENANT, OWNER, None, inline=True)
    sweeper = TaskSweeper(queue, grace_s=0)
    assert (await sweeper.sweep()).kept == 1  # lease still alive: maybe just slow

    async def enqueued() -> bool:
        return (await sweeper.sweep()).enqueued == 1

    await until(enqueued, what="the sweeper re-enqueuing the run once its lease expired", timeout=15)
    attempt = await claim(queue)
    assert attempt.task_id == created.task.task_id and attempt.number == 2
    snapshot = await queue.store.snapshot(created.task.task_id)
    assert snapshot is not None and snapshot.fails == 1
    await attempt.finish(Completed("recovered"))


async def test_a_run_whose_executor_raises_is_retried_on_the_queue(queue: TaskQueue) -> None:
    async def flaky(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        if checkpoint.attempt == 1:
            raise ConnectionError("model endpoint reset")
        return Completed("second time lucky")

    task = await queue.run(_run_request(), flaky, tenant=TENANT, owner=OWNER, timeout_s=10)
    assert task.state == task_pb2.TASK_STATE_WORKING and "model endpoint reset" in task.status_message
    assert await _outbox_size(queue.redis, queue) == 0  # handed to the queue: no longer an inline run
    done = await run_attempt(await claim(queue), flaky)
    assert done.final_answer == "second time lucky"


async def test_a_canceled_run_call_hands_the_task_off(queue: TaskQueue) -> None:
    started = asyncio.Event()

    async def forever(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        started.set()
        await asyncio.sleep(60)
        return Completed("never")

    call = asyncio.create_task(queue.run(_run_request(), forever, tenant=TENANT, owner=OWNER, timeout_s=30))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    entry = await read_one(queue)
    attempt = await queue.start(entry, "w")
    assert attempt is not None and attempt.number == 2
    await attempt.finish(Completed("finished elsewhere"))

"""TaskWorker: bounded concurrency, recovery of lost workers, dead letters, graceful drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from agentmesh.v1 import task_pb2
from memory.tasks.execution import Canceled, Checkpointer, Completed, TaskOutcome
from memory.tasks.queue import TaskQueue
from memory.tasks.worker import TaskWorker
from tests.support.task_helpers import OWNER, TENANT, claim, submit

pytestmark = pytest.mark.integration


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def _states(queue: TaskQueue, ids: list[str]) -> list[int]:
    return [(await queue.store.get(i, tenant=TENANT, owner=OWNER)).state for i in ids]


async def _all_done(queue: TaskQueue, ids: list[str]) -> bool:
    return all(s == task_pb2.TASK_STATE_COMPLETED for s in await _states(queue, ids))


async def test_a_worker_runs_queued_tasks_within_its_concurrency(queue: TaskQueue) -> None:
    running = peak = 0

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        await checkpoint.save(task_pb2.Step(index=0))
        running -= 1
        return Completed(task.instruction.upper())

    ids = [(await submit(queue, request_id=f"r{n}", instruction=f"task {n}")).task_id for n in range(12)]
    worker = TaskWorker(queue, execute, concurrency=3)
    runner = asyncio.create_task(worker.run())
    await _until(lambda: _all_done(queue, ids))
    await worker.drain(1)
    await runner
    assert 1 <= peak <= 3
    assert (await queue.store.get(ids[4], tenant=TENANT, owner=OWNER)).final_answer == "TASK 4"
    assert (await queue.stats()).pending == 0


async def test_a_worker_takes_over_the_task_of_a_lost_worker(queue: TaskQueue) -> None:
    task = await submit(queue)
    lost = await claim(queue, "lost-worker")
    await lost.checkpointer.save(task_pb2.Step(index=0, summary="before the crash"))
    seen_steps: list[list[str]] = []

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        seen_steps.append([s.summary for s in checkpoint.steps])
        await checkpoint.save(task_pb2.Step(index=checkpoint.next_index, summary="after"))
        return Completed("recovered")

    worker = TaskWorker(queue, execute, concurrency=2)
    runner = asyncio.create_task(worker.run())
    await _until(lambda: _all_done(queue, [task.task_id]))
    await worker.drain(1)
    await runner
    assert seen_steps == [["before the crash"]]
    done = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert done.attempt == 2 and [s.summary for s in done.steps] == ["before the crash", "after"]


async def test_a_failing_task_ends_in_the_dead_letters(queue: TaskQueue) -> None:
    task = await submit(queue)
    calls = 0

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        nonlocal calls
        calls += 1
        raise ValueError("cannot parse the order")

    worker = TaskWorker(queue, execute, concurrency=2)
    runner = asyncio.create_task(worker.run())

    async def dead() -> bool:
        return bool(await queue.dead_letters())

    await _until(dead)
    await worker.drain(1)
    await runner
    assert calls == queue.config.max_attempts
    failed = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert failed.stop_reason == task_pb2.STOP_REASON_DEAD_LETTERED
    assert "ValueError: cannot parse the order" in failed.error.message


async def test_a_running_worker_notices_a_cancel(queue: TaskQueue) -> None:
    task = await submit(queue)
    steps: list[int] = []

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        for index in range(checkpoint.next_index, 1000):
            steps.append(index)
            await asyncio.sleep(0.02)
            if await checkpoint.save(task_pb2.Step(index=index)):
                return Canceled()
        return Completed("too late")

    worker = TaskWorker(queue, execute, concurrency=1)
    runner = asyncio.create_task(worker.run())
    await _until(lambda: _has_steps(queue, task.task_id, 3))
    await queue.store.cancel(task.task_id, tenant=TENANT, owner=OWNER, reason="not needed")
    await _until(lambda: _state_is(queue, task.task_id, task_pb2.TASK_STATE_CANCELED))
    await worker.drain(1)
    await runner
    done = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert len(done.steps) == len(steps) < 1000


async def _has_steps(queue: TaskQueue, task_id: str, count: int) -> bool:
    return len((await queue.store.get(task_id, tenant=TENANT, owner=OWNER)).steps) >= count


async def _state_is(queue: TaskQueue, task_id: str, state: int) -> bool:
    return (await queue.store.get(task_id, tenant=TENANT, owner=OWNER)).state == state


async def test_drain_hands_unfinished_tasks_back(queue: TaskQueue) -> None:
    ids = [(await submit(queue, request_id=f"r{n}")).task_id for n in range(2)]
    release = asyncio.Event()
    executions: list[tuple[str, int, int]] = []

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        for index in range(checkpoint.next_index, 2):
            executions.append((task.task_id, index, checkpoint.attempt))
            if index == 1 and checkpoint.attempt == 1:
                await release.wait()  # never released: the drain has to hand it back
            await checkpoint.save(task_pb2.Step(index=index))
        return Completed("ok")

    first = TaskWorker(queue, execute, concurrency=2)
    runner = asyncio.create_task(first.run())
    await _until(lambda: _both_started(executions))
    await first.drain(grace_s=0.2)
    await runner
    assert await _states(queue, ids) == [task_pb2.TASK_STATE_WORKING] * 2
    second = TaskWorker(queue, execute, concurrency=2)
    runner = asyncio.create_task(second.run())
    await _until(lambda: _all_done(queue, ids), timeout=10)  # no idle timeout to wait for
    await second.drain(1)
    await runner
    for task_id in ids:
        snapshot = await queue.store.snapshot(task_id)
        assert snapshot is not None and snapshot.fails == 0 and snapshot.task.attempt == 2
        mine = [(i, a) for t, i, a in executions if t == task_id]
        assert mine == [(0, 1), (1, 1), (1, 2)]  # step 0 was checkpointed and never ran again


async def _both_started(executions: list[tuple[str, int, int]]) -> bool:
    return len({t for t, i, _ in executions if i == 1}) == 2

"""TaskWorker: bounded concurrency, recovery of lost workers, dead letters, graceful drain."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.v1 import task_pb2
from memory.connection import create_redis
from memory.tasks.execution import Canceled, Checkpointer, Completed, Rejected, TaskOutcome
from memory.tasks.queue import TaskQueue
from memory.tasks.worker import TaskWorker, start_through_outage
from tests.integration.memory.conftest import FAST
from tests.support.task_helpers import OWNER, TENANT, claim, read_one, reclaim_one, submit
from tests.support.waiting import until

pytestmark = pytest.mark.integration


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    await until(check, timeout=timeout, interval=0.05)


async def _states(queue: TaskQueue, ids: list[str]) -> list[int]:
    return [(await queue.store.get(i, tenant=TENANT, owner=OWNER)).state for i in ids]


async def _all_done(queue: TaskQueue, ids: list[str]) -> bool:
    return all(s == task_pb2.TASK_STATE_COMPLETED for s in await _states(queue, ids))


async def test_a_worker_runs_queued_tasks_within_its_concurrency(queue: TaskQueue) -> None:
    running = peak = 0
    release = asyncio.Event()

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()  # every attempt holds its slot until the test lets go
        await checkpoint.save(task_pb2.Step(index=0))
        running -= 1
        return Completed(task.instruction.upper())

    ids = [(await submit(queue, request_id=f"r{n}", instruction=f"task {n}")).task_id for n in range(12)]
    worker = TaskWorker(queue, execute, concurrency=3)
    runner = asyncio.create_task(worker.run())
    await until(lambda: running == 3, what="3 attempts running at once")
    # The worker keeps looking for work while its slots are full: give an over-eager one the
    # chance to start a 4th (a longer wait only makes a broken bound more visible, never a pass).
    await asyncio.sleep(0.3)
    assert running == 3
    release.set()
    await _until(lambda: _all_done(queue, ids))
    await worker.drain(1)
    await runner
    assert peak == 3
    assert (await queue.store.get(ids[4], tenant=TENANT, owner=OWNER)).final_answer == "TASK 4"
    assert (await queue.stats()).pending == 0


async def test_a_task_the_agent_refuses_ends_rejected_with_its_artifacts_and_error(queue: TaskQueue) -> None:
    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        artifact = task_pb2.Artifact(artifact_id="note", parts=[task_pb2.Part(text="why")])
        await checkpoint.save(task_pb2.Step(index=0), artifacts=[artifact])
        error = task_pb2.TaskError(reason="AGENT_REFUSED", message="not mine")
        return Rejected(stop_reason=task_pb2.STOP_REASON_POLICY_DENIED, error=error, message="not mine")

    task_id = (await submit(queue, request_id="refused")).task_id
    worker = TaskWorker(queue, execute, concurrency=1)
    runner = asyncio.create_task(worker.run())

    async def rejected() -> bool:
        return (await _states(queue, [task_id])) == [task_pb2.TASK_STATE_REJECTED]

    await _until(rejected)
    await worker.drain(1)
    await runner
    done = await queue.store.get(task_id, tenant=TENANT, owner=OWNER)
    assert done.stop_reason == task_pb2.STOP_REASON_POLICY_DENIED and done.status_message == "not mine"
    assert done.error.reason == "AGENT_REFUSED" and [a.artifact_id for a in done.artifacts] == ["note"]
    assert done.HasField("end_time") and done.HasField("expire_time")
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


async def test_a_crashed_task_is_resumed_before_a_backlog_of_new_tasks(queue: TaskQueue) -> None:
    """Recovery order: a lost worker's task gets the next free slot, ahead of the readers."""
    crashed = await submit(queue, request_id="crashed", instruction="crashed")
    lost = await claim(queue, "lost-worker")
    assert lost.task_id == crashed.task_id
    await lost.checkpointer.save(task_pb2.Step(index=0, summary="before the crash"))
    backlog = [(await submit(queue, request_id=f"new{n}", instruction=f"new {n}")).task_id for n in range(6)]
    started: list[str] = []
    resumed_from: list[list[str]] = []
    gate = asyncio.Event()

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        started.append(task.task_id)
        if task.task_id == crashed.task_id:
            resumed_from.append([s.summary for s in checkpoint.steps])
        else:
            await gate.wait()  # the first new task holds the only slot until the test lets it go
        await checkpoint.save(task_pb2.Step(index=checkpoint.next_index, summary="done"))
        return Completed("ok")

    worker = TaskWorker(queue, execute, concurrency=1)
    runner = asyncio.create_task(worker.run())
    await _until(lambda: _true(len(started) == 1))  # the one slot runs new work
    await _until(lambda: _true(worker.recovering == 1))  # the crashed task became idle and waits
    gate.set()
    await _until(lambda: _all_done(queue, [crashed.task_id, *backlog]))
    await worker.drain(1)
    await runner
    assert started[0] in backlog
    assert started[1] == crashed.task_id, "the crashed task waited behind new work"
    assert resumed_from == [["before the crash"]]
    assert sorted(started[2:]) == sorted(set(backlog) - {started[0]})


async def _true(value: bool) -> bool:
    return value


async def test_starting_an_entry_through_a_redis_outage_gives_up_at_its_deadline(
    tmp_redis: Callable[..., EmbeddedRedis], caplog: pytest.LogCaptureFixture
) -> None:
    """The wait after Redis went away is bounded (the claim idle timeout): the slot is given up with
    an error naming the task, and the entry stays for the reclaimers once Redis is back."""
    server = tmp_redis(appendonly=True, appendfsync="always")
    redis = create_redis(server.url)
    try:
        queue = TaskQueue(redis, domain="refunds", config=FAST)
        await queue.ensure_groups()
        task = await submit(queue)
        entry = await read_one(queue, "c1")
        server.stop()
        began = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="memory.tasks.worker"):
            attempt = await asyncio.wait_for(
                start_through_outage(
                    lambda: queue.start(entry, "c1"),
                    asyncio.Event(),
                    deadline_s=1.0,
                    what=f"starting task {task.task_id}",
                ),
                timeout=20,
            )
        assert attempt is None
        assert time.monotonic() - began >= 1.0
        assert f"Redis unreachable for 1.0 s while starting task {task.task_id}" in caplog.text
        server.start()
        reclaimed = await reclaim_one(queue, "c2")
        assert reclaimed.task_id == task.task_id
        resumed = await queue.start(reclaimed, "c2")
        assert resumed is not None and resumed.number == 1
    finally:
        await redis.aclose()

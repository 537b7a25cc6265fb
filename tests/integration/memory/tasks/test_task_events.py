"""WatchTask's data source: replay from any event id, then live, ending after the terminal state."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.kit.errors import InvalidArgument, NotFound
from agentmesh.v1 import task_pb2
from memory.tasks.execution import Checkpointer, Completed, TaskOutcome, run_attempt
from memory.tasks.queue import TaskQueue
from tests.support.task_helpers import OWNER, TENANT, claim, reclaim_one, steps_executor, submit
from tests.support.waiting import until

pytestmark = pytest.mark.integration


async def _collect(queue: TaskQueue, task_id: str, after: str = "", **kw: object) -> list[task_pb2.TaskEvent]:
    return [
        e
        async for e in queue.events.watch(task_id, tenant=TENANT, owner=OWNER, after_event_id=after, **kw)  # type: ignore[arg-type]
    ]


async def test_watch_a_finished_task_replays_everything_and_ends(queue: TaskQueue) -> None:
    task = await submit(queue)
    await run_attempt(await claim(queue), steps_executor(2))
    events = await asyncio.wait_for(_collect(queue, task.task_id), 10)
    assert [e.WhichOneof("event") for e in events] == ["status_update"] * 2 + ["step_update"] * 2 + [
        "status_update"
    ]
    assert events[-1].status_update.state == task_pb2.TASK_STATE_COMPLETED
    assert all(e.task_id == task.task_id and e.create_time.seconds > 0 for e in events)
    ids = [e.event_id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


async def test_watch_resumes_after_an_event_id(queue: TaskQueue) -> None:
    task = await submit(queue)
    await run_attempt(await claim(queue), steps_executor(3))
    everything = await _collect(queue, task.task_id)
    rest = await asyncio.wait_for(_collect(queue, task.task_id, after=everything[2].event_id), 10)
    assert [e.event_id for e in rest] == [e.event_id for e in everything[3:]]
    assert await asyncio.wait_for(_collect(queue, task.task_id, after=everything[-1].event_id), 10) == []


async def test_watch_follows_a_running_task_live(queue: TaskQueue) -> None:
    task = await submit(queue)
    attempt = await claim(queue)
    received: list[task_pb2.TaskEvent] = []

    async def watch() -> None:
        async for event in queue.events.watch(task.task_id, tenant=TENANT, owner=OWNER):
            received.append(event)

    history = await queue.events.read(task.task_id, tenant=TENANT, owner=OWNER)
    watcher = asyncio.create_task(watch())
    # Past the replay: what comes next can only come from the live tail.
    await until(lambda: len(received) == len(history), what="the watcher to replay the history", timeout=10)
    await attempt.checkpointer.save(task_pb2.Step(index=0, summary="live step"))
    await attempt.finish(Completed("live answer"))
    await asyncio.wait_for(watcher, 10)
    assert received[-1].status_update.final_answer == "live answer", received
    assert any(e.step_update.step.summary == "live step" for e in received)


async def test_watch_ends_when_the_server_drains(queue: TaskQueue) -> None:
    task = await submit(queue)
    stop = asyncio.Event()
    received: list[task_pb2.TaskEvent] = []

    async def watch() -> list[task_pb2.TaskEvent]:
        async for event in queue.events.watch(task.task_id, tenant=TENANT, owner=OWNER, stop=stop):
            received.append(event)
        return received

    watcher = asyncio.create_task(watch())
    await until(lambda: received, what="the watcher to replay the SUBMITTED event", timeout=10)
    stop.set()
    events = await asyncio.wait_for(watcher, 10)
    assert [e.status_update.state for e in events] == [task_pb2.TASK_STATE_SUBMITTED]


async def test_watch_is_checked(queue: TaskQueue) -> None:
    task = await submit(queue)
    with pytest.raises(InvalidArgument):
        await _collect(queue, task.task_id, after="yesterday")
    with pytest.raises(NotFound):
        async for _ in queue.events.watch(task.task_id, tenant=TENANT, owner="mallory"):
            pass


async def test_a_redriven_task_is_watched_past_its_dead_letter(queue: TaskQueue) -> None:
    """A watch ends at the task's *last* terminal change: after a redrive it runs through the
    dead-letter failure to the new outcome."""
    task = await submit(queue)

    async def explode(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        raise RuntimeError("boom")

    await run_attempt(await claim(queue), explode)
    retry = await queue.start(await reclaim_one(queue), "c2")
    assert retry is not None
    await run_attempt(retry, explode)
    assert await queue.start(await reclaim_one(queue), "c3") is None  # dead-lettered now
    letters = await queue.dead_letters()
    await queue.redrive([letters[0].entry_id])
    history = await queue.events.read(task.task_id, tenant=TENANT, owner=OWNER)
    received: list[task_pb2.TaskEvent] = []

    async def watch() -> list[task_pb2.TaskEvent]:
        async for event in queue.events.watch(task.task_id, tenant=TENANT, owner=OWNER):
            received.append(event)
        return received

    watcher = asyncio.create_task(watch())
    await until(lambda: len(received) == len(history), what="the watcher to replay the history", timeout=10)
    # Give a watch that wrongly ends at FAILED the chance to end (a longer wait only makes that
    # more visible, never a pass).
    await asyncio.sleep(0.3)
    assert not watcher.done()  # FAILED is no longer the end: the task was redriven
    await run_attempt(await claim(queue), steps_executor(1))
    events = await asyncio.wait_for(watcher, 10)
    states = [e.status_update.state for e in events if e.HasField("status_update")]
    assert states.count(task_pb2.TASK_STATE_FAILED) == 1 and states[-1] == task_pb2.TASK_STATE_COMPLETED

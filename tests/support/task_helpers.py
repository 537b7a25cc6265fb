"""Small helpers shared by the task-layer integration tests."""

from __future__ import annotations

import asyncio
import time

from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.requests import new_task
from memory import keys
from memory.tasks.entries import QueueEntry
from memory.tasks.execution import Attempt, Checkpointer, Completed, TaskOutcome
from memory.tasks.queue import TaskQueue

TENANT = "acme"
OWNER = "alice"


def submit_request(
    instruction: str = "refund order 7", request_id: str = "req-1", **kw: object
) -> agent_service_pb2.SubmitTaskRequest:
    return agent_service_pb2.SubmitTaskRequest(instruction=instruction, request_id=request_id, **kw)  # type: ignore[arg-type]


async def submit(
    queue: TaskQueue, request_id: str = "req-1", owner: str = OWNER, **kw: object
) -> task_pb2.Task:
    return await queue.submit(
        new_task(submit_request(request_id=request_id, **kw)), tenant=TENANT, owner=owner
    )


def task_key(queue: TaskQueue, task_id: str) -> str:
    """The task's record hash (its steps and lease are fields of it)."""
    return keys.task(queue.domain, queue.shard_of(task_id), task_id)


def events_key(queue: TaskQueue, task_id: str) -> str:
    return keys.task_events(queue.domain, queue.shard_of(task_id), task_id)


async def read_one(queue: TaskQueue, consumer: str = "c1", timeout: float = 10.0) -> QueueEntry:
    """The next new entry from any shard."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for shard in queue.shards():
            entries = await queue.read(consumer, shard, count=1)
            if entries:
                return entries[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no queue entry arrived")


async def reclaim_one(queue: TaskQueue, consumer: str = "c2", timeout: float = 15.0) -> QueueEntry:
    """The next entry of a lost worker (after the idle timeout), from any shard."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for shard in queue.shards():
            entries = await queue.reclaim(consumer, shard, count=1)
            if entries:
                return entries[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no entry became reclaimable")


async def claim(queue: TaskQueue, consumer: str = "c1") -> Attempt:
    attempt = await queue.start(await read_one(queue, consumer), consumer)
    assert attempt is not None
    return attempt


def steps_executor(total: int, log: list[tuple[int, int]] | None = None):  # type: ignore[no-untyped-def]
    """An executor that checkpoints steps next_index..total-1, recording (step, attempt)."""

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        for index in range(checkpoint.next_index, total):
            if log is not None:
                log.append((index, checkpoint.attempt))
            await checkpoint.save(task_pb2.Step(index=index, summary=f"step {index}"))
        return Completed(final_answer=f"done after {total} steps")

    return execute


async def event_kinds(queue: TaskQueue, task_id: str, owner: str = OWNER) -> list[str]:
    events = await queue.events.read(task_id, tenant=TENANT, owner=owner)
    kinds = []
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "status_update":
            kinds.append(task_pb2.TaskState.Name(event.status_update.state).removeprefix("TASK_STATE_"))
        else:
            kinds.append(kind or "?")
    return kinds

"""Recovery delay after a crash, behind a backlog (issue: crashed work waited ≈20 s behind new
work against a 3 s idle timeout).

A worker claims a task and dies (its entry stays pending, no heartbeats); 40 new tasks of 1 s
each are queued; a TaskWorker with 2 slots and a 3 s claim idle timeout starts. Reported: the
seconds from the lost worker's claim until the crashed task runs again (the floor is the idle
timeout; the rest is the reclaimer's peek interval and the wait for the next free slot).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.requests import new_task
from memory.connection import create_redis
from memory.tasks.admission import NewTask
from memory.tasks.execution import Checkpointer, Completed, TaskOutcome
from memory.tasks.queue import TaskQueue
from memory.tasks.store import TaskConfig
from memory.tasks.worker import TaskWorker

IDLE_S, WORK_S, BACKLOG, SLOTS, RUNS = 3.0, 1.0, 40, 2, 3


async def _one(url: str, domain: str) -> float:
    redis = create_redis(url)
    queue = TaskQueue(redis, domain=domain, config=TaskConfig(shards=2, claim_idle_timeout_s=IDLE_S))
    await queue.ensure_groups()

    def request(request_id: str) -> NewTask:
        return new_task(agent_service_pb2.SubmitTaskRequest(instruction="x", request_id=request_id))

    crashed = await queue.submit(request("crashed"), tenant="t", owner="o")
    lost = None
    while lost is None:
        for shard in queue.shards():
            lost = lost or await queue.claim("lost-worker", shard)
    began = time.monotonic()
    for n in range(BACKLOG):
        await queue.submit(request(f"new-{n}"), tenant="t", owner="o")
    resumed: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        if task.task_id == crashed.task_id:
            if not resumed.done():
                resumed.set_result(time.monotonic() - began)
        else:
            await asyncio.sleep(WORK_S)
        await checkpoint.save(task_pb2.Step(index=checkpoint.next_index))
        return Completed("ok")

    worker = TaskWorker(queue, execute, concurrency=SLOTS)
    running = asyncio.create_task(worker.run())
    try:
        return await asyncio.wait_for(resumed, BACKLOG * WORK_S + 30)
    finally:
        await worker.drain(0.1)
        await running
        await redis.aclose()


async def _main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedRedis(data_dir=Path(directory))
        server.start()
        try:
            for run in range(RUNS):
                delay = await _one(server.url, f"recovery{run}")
                print(
                    f"run {run}: crashed task resumed {delay:.2f} s after its claim "
                    f"(idle timeout {IDLE_S:g} s, {SLOTS} slots, {BACKLOG} new {WORK_S:g}-s tasks queued)",
                    flush=True,
                )
        finally:
            server.cleanup()


def main() -> None:
    asyncio.run(_main())


if __name__ == "__main__":
    main()

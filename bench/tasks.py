"""Durable task cycles vs raw Redis Streams cycles, in one run against the same server.

Raw baseline: redis-py XADD + XREADGROUP + XACK per cycle.
Full cycle through the task layer, as TaskWorker runs it: submit (record, event, owner index
and queue entry: one script) -> claim (read the entry and begin the attempt: fencing token,
lease, event: one script; a blocking read + start only if another worker took the entry) ->
one checkpoint (one script) -> complete (record, event, retention TTL and the acknowledgement:
one script). 1 and 8 concurrent workers, p50/p99 per cycle.
valkey runs in its own process; the client is this process (one event loop).
"""

from __future__ import annotations

import asyncio
import itertools

from agentmesh.embedded_redis import EmbeddedRedis
from agentmesh.v1 import agent_service_pb2, task_pb2
from bench.common import LoadResult, closed_loop, ratio
from memory.connection import create_redis
from memory.task_execution import Checkpointer, Completed, Outcome, run_attempt
from memory.task_queue import TaskQueue
from memory.tasks import TaskConfig

DURATION_S = 3.0
PAYLOAD = b"x" * 96  # about the size of a queue entry


async def _one_step(task: task_pb2.Task, checkpoint: Checkpointer) -> Outcome:
    await checkpoint.save(task_pb2.Step(index=0, summary="one step"))
    return Completed("done")


async def run(duration_s: float = DURATION_S) -> list[tuple[LoadResult, LoadResult]]:
    server = EmbeddedRedis().start()
    redis = create_redis(server.url)
    try:
        stream, group = "bench:raw", "g"
        await redis.xgroup_create(stream, group, id="0", mkstream=True)

        async def raw_cycle() -> None:
            await redis.xadd(stream, {"e": PAYLOAD})
            reply = await redis.xreadgroup(group, "bench", {stream: ">"}, count=1, block=100)
            for _name, entries in reply or []:
                for entry_id, _fields in entries:
                    await redis.xack(stream, group, entry_id)

        queue = TaskQueue(redis, domain="bench", config=TaskConfig())
        await queue.ensure_groups()
        numbers = itertools.count()

        async def task_cycle() -> None:
            request = agent_service_pb2.SubmitTaskRequest(
                instruction="bench", request_id=f"b-{next(numbers)}"
            )
            task = await queue.submit(request, tenant="bench", owner="bench")
            shard = queue.shard_of(task.task_id)
            attempt = await queue.claim("bench", shard)
            if attempt is None:  # another worker took this shard's entry: wait for the next one
                for entry in await queue.read("bench", shard, count=1, block_ms=100):
                    attempt = await queue.start(entry, "bench")
            if attempt is not None:
                await run_attempt(attempt, _one_step)

        results = []
        for in_flight in (1, 8):
            raw = await closed_loop(
                "raw XADD+XREADGROUP+XACK", raw_cycle, in_flight=in_flight, duration_s=duration_s
            )
            full = await closed_loop(
                "task cycle (TaskQueue)", task_cycle, in_flight=in_flight, duration_s=duration_s
            )
            results.append((raw, full))
        return results
    finally:
        await redis.aclose()
        server.cleanup()


def main() -> None:
    results = asyncio.run(run())
    print("| workers | raw cycles/s (p50 / p99 ms) | task cycles/s (p50 / p99 ms) | task/raw |")
    print("|---|---|---|---|")
    for raw, full in results:
        print(raw.line())
        print(full.line())
    for raw, full in results:
        print(
            f"| {raw.in_flight} | {raw.rate:,.0f} ({raw.p50:.2f} / {raw.p99:.2f}) | "
            f"{full.rate:,.0f} ({full.p50:.2f} / {full.p99:.2f}) | {ratio(full.rate, raw.rate)} |"
        )


if __name__ == "__main__":
    main()

"""Durable task cycles vs raw Redis Streams cycles, in one run against the same server.

Raw baseline: redis-py XADD + XREADGROUP + XACK per cycle.
Full cycle through the task layer, as TaskWorker runs it: submit (record, event, owner index
and queue entry: one script) -> claim (read the entry and begin the attempt: fencing token,
lease, event: one script; a blocking read + start only if another worker took the entry) ->
one step, a model turn, handed over as the task's last step (`Checkpointer.save_last`, as the
agent runtime does with its final turn) -> complete (the step's checkpoint and event, the
record, the status event, retention TTL and the acknowledgement: one script). 1 and 8
concurrent workers (closed loop), p50/p99 per cycle. 3 round trips per cycle, as the raw one.

Raw and task rounds alternate (ROUNDS of ROUND_S each) so drift on a shared machine hits both
sides; rates are summed over the rounds, the ratio is the median of the per-round ratios.
Per cycle the run also reports the client's CPU (this process) and the server's CPU (valkey's
used_cpu_user + used_cpu_sys): where the time goes. valkey runs in its own process.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.requests import new_task
from bench.common import LoadResult, closed_loop, scaled, scaled_int
from bench.summary import Row
from memory.connection import AnyRedis, create_redis
from memory.tasks.execution import Checkpointer, Completed, TaskOutcome, run_attempt
from memory.tasks.queue import TaskQueue
from memory.tasks.store import TaskConfig

ROUNDS = scaled_int(6, 2)
ROUND_S = scaled(0.75, 0.4)
PAYLOAD = b"x" * 96  # about the size of a queue entry


@dataclass
class Side:
    label: str
    rounds: list[LoadResult]
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self.rounds)

    @property
    def rate(self) -> float:
        return self.calls / sum(r.seconds for r in self.rounds)

    def percentile(self, q: float) -> float:
        ordered = sorted(x for r in self.rounds for x in r.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def per_cycle_us(self, seconds: float) -> float:
        return seconds / self.calls * 1e6


async def _one_step(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
    checkpoint.save_last(task_pb2.Step(index=0, kind=task_pb2.STEP_KIND_MODEL_CALL, summary="one step"))
    return Completed("done")


async def _server_cpu_s(redis: AnyRedis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _round(redis: AnyRedis, side: Side, call: Callable[[], Awaitable[object]], in_flight: int) -> None:
    client, server = time.process_time(), await _server_cpu_s(redis)
    side.rounds.append(
        await closed_loop(side.label, call, in_flight=in_flight, duration_s=ROUND_S, warmup_s=0.1)
    )
    side.client_cpu_s += time.process_time() - client
    side.server_cpu_s += await _server_cpu_s(redis) - server


async def run(rounds: int = ROUNDS) -> list[tuple[Side, Side, float]]:
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
            task = await queue.submit(new_task(request), tenant="bench", owner="bench")
            shard = queue.shard_of(task.task_id)
            attempt = await queue.claim("bench", shard)
            if attempt is None:  # another worker took this shard's entry: wait for the next one
                for entry in await queue.read("bench", shard, count=1, block_ms=100):
                    attempt = await queue.start(entry, "bench")
            if attempt is not None:
                await run_attempt(attempt, _one_step)

        results = []
        for in_flight in (1, 8):
            raw = Side("raw XADD+XREADGROUP+XACK", [])
            full = Side("task cycle (TaskQueue)", [])
            for _ in range(rounds):
                await _round(redis, raw, raw_cycle, in_flight)
                await _round(redis, full, task_cycle, in_flight)
            ratio = statistics.median(
                t.calls / t.seconds / (r.calls / r.seconds)
                for r, t in zip(raw.rounds, full.rounds, strict=True)
            )
            results.append((raw, full, ratio))
        return results
    finally:
        await redis.aclose()
        server.cleanup()


def main() -> list[Row]:
    results = asyncio.run(run())
    rows = []
    print(
        "| workers | raw cycles/s (p50 / p99 ms) | task cycles/s (p50 / p99 ms) | task/raw | "
        "client CPU µs/cycle raw → task | server CPU µs/cycle raw → task |"
    )
    print("|---|---|---|---|---|---|")
    for raw, full, ratio in results:
        in_flight = raw.rounds[0].in_flight
        print(
            f"| {in_flight} | {raw.rate:,.0f} ({raw.percentile(0.5):.2f} / {raw.percentile(0.99):.2f}) | "
            f"{full.rate:,.0f} ({full.percentile(0.5):.2f} / {full.percentile(0.99):.2f}) | "
            f"{ratio:.2f}x | {raw.per_cycle_us(raw.client_cpu_s):,.0f} → "
            f"{full.per_cycle_us(full.client_cpu_s):,.0f} | {raw.per_cycle_us(raw.server_cpu_s):,.0f} → "
            f"{full.per_cycle_us(full.server_cpu_s):,.0f} |"
        )
        rows.append(
            Row(
                "tasks",
                f"durable task cycles/s vs raw Streams, {in_flight} workers",
                full.rate,
                "/s",
                ">= 0.5x",
                ratio >= 0.5,
                baseline=raw.rate,
                ratio=ratio,
                note=f"median of {ROUNDS} rounds",
            )
        )
    return rows


if __name__ == "__main__":
    main()

"""A2A SendMessage: an agentmesh agent vs the a2a-sdk reference server, in one run.

The scenario is the conformance suite's `tck-complete-task`: a message whose
task completes with "Hello from TCK" after one POST to the scripted model
(answering at once). Three servers, each its own process on loopback, all
POSTing to the same scripted model process:

- agentmesh: `agentmesh serve agent` with bench/specs/a2a-bench.yaml, auth on
  (every call carries a verified JWT), every task persisted in Redis (valkey
  from the embedded server) as a durable mesh task;
- reference, in memory: the a2a-sdk's gRPC binding (`GrpcHandler` over
  `DefaultRequestHandler`) with its `InMemoryTaskStore` and an executor that
  makes the same single POST (bench/a2a_reference.py);
- reference, SQLite: the same with its `DatabaseTaskStore` on SQLite (aiosqlite).

One client for all three: grpc.aio with the `lf.a2a.v1` stubs from the a2a-sdk
wheel, the same metadata (bearer token + `a2a-version: 1.0`), a fresh message
id per call. Closed loops at 1 and 32 in flight; the servers alternate within
every round so load drift on the shared machine hits all three alike; the
figures pool every round. Targets: agentmesh >= 1.0x the in-memory reference's
throughput and ahead of the SQLite one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc

from agentmesh.kit.net import free_port
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.proc import ServiceProcess
from agents.client import AgentClient
from bench.common import CURRENT, ROOT, SAMPLES, LoadResult, closed_loop, scaled, scaled_int
from bench.summary import Row
from tests.support.agent_mesh import running_mesh
from tests.support.auth import bearer

SPECS = ROOT / "bench" / "specs"
SPEC = SPECS / "a2a-bench.yaml"
SCRIPT = SPECS / "a2a-bench-script.yaml"
ROUNDS = scaled_int(4, 1)
ROUND_S = scaled(3.0, 1.0)
IN_FLIGHT = (1, 32)
ANSWER = "Hello from TCK"
SERVERS = ("agentmesh", "reference, in memory", "reference, SQLite", "agentmesh, native Run")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def counted(call: Callable[[], Awaitable[object]], count: list[int]) -> Callable[[], Awaitable[object]]:
    async def wrapped() -> object:
        count[0] += 1
        return await call()

    return wrapped


def native(agent: AgentClient) -> Callable[[], Awaitable[object]]:
    """The same task through the native API (Run) of the same agent: what the A2A adapter adds."""

    async def call() -> object:
        task = await agent.run("Hello")
        if task.final_answer != ANSWER:
            raise AssertionError(f"not completed with the answer: {task}")
        return task

    return call


def send(
    stub: a2a_pb2_grpc.A2AServiceStub, metadata: list[tuple[str, str]]
) -> Callable[[], Awaitable[object]]:
    """One blocking SendMessage of a new task; checks it completed with the model's answer."""
    counter = itertools.count()
    prefix = f"tck-complete-task-{uuid.uuid4().hex[:8]}"

    async def call() -> object:
        message = a2a.Message(
            message_id=f"{prefix}-{next(counter)}", role=a2a.ROLE_USER, parts=[a2a.Part(text="Hello")]
        )
        reply = await stub.SendMessage(a2a.SendMessageRequest(message=message), metadata=metadata, timeout=30)
        task = reply.task
        if task.status.state != a2a.TASK_STATE_COMPLETED or task.status.message.parts[0].text != ANSWER:
            raise AssertionError(f"not completed with the answer: {task}")
        return reply

    return call


def reference(name: str, model_url: str, store: str, sqlite: Path) -> ServiceProcess:
    port = free_port()
    process = ServiceProcess(
        name=name,
        argv=[
            sys.executable,
            "-m",
            "bench.a2a_reference",
            "--port",
            str(port),
            "--model-url",
            model_url,
            "--store",
            store,
            "--sqlite",
            str(sqlite),
        ],
        grpc_port=port,
        env={},
        cwd=ROOT,
        log_path=ROOT / "bench" / "out" / f"a2a-{store}.log",
    )
    process.start()
    return process


def pooled(label: str, in_flight: int, parts: list[LoadResult]) -> LoadResult:
    latencies = [ms for part in parts for ms in part.latencies_ms]
    result = LoadResult(
        label, in_flight, sum(p.calls for p in parts), sum(p.seconds for p in parts), latencies
    )
    SAMPLES[f"{CURRENT[0]}: {label} @{in_flight}"] = latencies
    return result


async def measure(
    targets: dict[str, str], pids: dict[str, int], agent: AgentClient
) -> tuple[dict[tuple[str, int], LoadResult], dict[tuple[str, int], float]]:
    """Pooled closed-loop results and the server process's CPU ms per call, by (server, in flight)."""
    metadata = [*bearer(), ("a2a-version", "1.0")]
    channels = {name: grpc.aio.insecure_channel(target) for name, target in targets.items()}
    calls = {name: send(a2a_pb2_grpc.A2AServiceStub(channel), metadata) for name, channel in channels.items()}
    calls["agentmesh, native Run"] = native(agent)
    pids = {**pids, "agentmesh, native Run": pids["agentmesh"]}
    parts: dict[tuple[str, int], list[LoadResult]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    try:
        for call in calls.values():  # warm-up: connections, first task, SQLite schema
            for _ in range(5):
                await call()
        for index in range(ROUNDS):
            for in_flight in IN_FLIGHT:
                order = list(calls) if index % 2 == 0 else list(reversed(calls))
                for name in order:
                    count = [0]
                    before = cpu_s(pids[name])
                    result = await closed_loop(
                        f"A2A SendMessage, {name}",
                        counted(calls[name], count),
                        in_flight=in_flight,
                        duration_s=ROUND_S,
                        warmup_s=0.2,
                    )
                    cpu.setdefault((name, in_flight), []).append(
                        (cpu_s(pids[name]) - before) * 1000 / count[0]
                    )
                    print(f"  round {index + 1}: {result.line()}", flush=True)
                    parts.setdefault((name, in_flight), []).append(result)
    finally:
        for channel in channels.values():
            await channel.close()
    pooled_results = {
        key: pooled(f"A2A SendMessage, {key[0]}", key[1], value) for key, value in parts.items()
    }
    return pooled_results, {key: statistics.median(values) for key, values in cpu.items()}


def rows(results: dict[tuple[str, int], LoadResult], cpu: dict[tuple[str, int], float]) -> list[Row]:
    out: list[Row] = []
    for in_flight in IN_FLIGHT:
        mesh = results["agentmesh", in_flight]
        memory = results["reference, in memory", in_flight]
        sqlite = results["reference, SQLite", in_flight]
        run = results["agentmesh, native Run", in_flight]
        latency = (
            f"p50/p99 ms: agentmesh {mesh.p50:.1f}/{mesh.p99:.1f}, in memory {memory.p50:.1f}/"
            f"{memory.p99:.1f}, SQLite {sqlite.p50:.1f}/{sqlite.p99:.1f}; native Run {run.rate:.0f}/s "
            f"{run.p50:.1f}/{run.p99:.1f}; server CPU ms/call: agentmesh "
            f"{cpu['agentmesh', in_flight]:.2f}, in memory {cpu['reference, in memory', in_flight]:.2f}, "
            f"SQLite {cpu['reference, SQLite', in_flight]:.2f}"
        )
        out.append(
            Row(
                "a2a",
                f"SendMessage/s vs a2a-sdk in-memory store, {in_flight} in flight",
                mesh.rate,
                "/s",
                "≥ 1.0x",
                mesh.rate >= memory.rate,
                baseline=memory.rate,
                ratio=mesh.rate / memory.rate,
                note=latency,
            )
        )
        out.append(
            Row(
                "a2a",
                f"SendMessage/s vs a2a-sdk SQLite store, {in_flight} in flight",
                mesh.rate,
                "/s",
                "> 1.0x",
                mesh.rate > sqlite.rate,
                baseline=sqlite.rate,
                ratio=mesh.rate / sqlite.rate,
            )
        )
        out.append(
            Row(
                "a2a",
                f"SendMessage p99 vs a2a-sdk in-memory store, {in_flight} in flight",
                mesh.p99,
                "ms",
                "-",
                None,
                baseline=memory.p99,
                ratio=mesh.p99 / memory.p99,
            )
        )
    return out


async def run() -> list[Row]:
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(data_dir=Path(tmp) / "valkey")
        redis.start()
        references: list[ServiceProcess] = []
        try:
            async with running_mesh(
                redis.url,
                out,
                tools=[],
                model_script=SCRIPT,
                agents=[SPEC],
                registered_tools=[],
                env={"AGENTMESH_LOG_LEVEL": "WARNING"},
            ) as mesh:
                references = [
                    reference("a2a-reference-memory", mesh.model_url, "memory", Path(tmp) / "unused.db"),
                    reference("a2a-reference-sqlite", mesh.model_url, "sqlite", Path(tmp) / "tasks.db"),
                ]
                await asyncio.gather(*(process.wait_serving(60) for process in references))
                agent_pid = mesh.processes["agent-a2abench"].pid
                assert agent_pid is not None and all(p.pid is not None for p in references)
                async with AgentClient.connect(mesh.agents["a2abench"], metadata=bearer()) as agent:
                    results, cpu = await measure(
                        {
                            "agentmesh": mesh.agents["a2abench"],
                            "reference, in memory": references[0].target,
                            "reference, SQLite": references[1].target,
                        },
                        {
                            "agentmesh": agent_pid,
                            "reference, in memory": references[0].pid or 0,
                            "reference, SQLite": references[1].pid or 0,
                        },
                        agent,
                    )
        finally:
            for process in references:
                process.stop()
            redis.cleanup()
    for key in sorted(results, key=lambda k: (k[1], SERVERS.index(k[0]))):
        print(f"{results[key].line()}  server CPU {cpu[key]:.2f} ms/call")
    return rows(results, cpu)


def main() -> list[Row]:
    return asyncio.run(run())


if __name__ == "__main__":
    for row in main():
        print(row)

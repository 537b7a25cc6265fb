"""Fault isolation: p99 of domain B's multi-step tasks while domain A's tool is slow (~2 s).

Two domains, each with its own tool: A's one step calls `dummy_echo` on a dummy answering
after 1.9 s (its declared timeout is 2 s); B's tasks make three `inventory_check` steps on a fast
inventory tool, then answer (the scripted model picks the rules by the `x-agentmesh-domain`
header). Domain A
gets a backlog of tasks (more than all the workers can run in the round, so its slow
calls occupy every slot it can get); meanwhile B runs a closed loop of tasks, each
submitted (SubmitTask, the durable path the workers run) and followed to its end with
WatchTask. B's latency is submit -> terminal.

- agentmesh: two agent services (`agentmesh serve agent`, one per domain), each with
  W bounded workers (AGENTMESH_WORKER_CONCURRENCY).
- one process: the same two domains in ONE process (bench/isolation_mono.py: the
  product's AgentProcess per domain, same handler/runner/worker code) with one shared
  pool of 2W workers, the same total.

Same valkey, registry, tools and scripted model for both; the modes run one after the
other on distinct domain slugs so nothing of one is left in the other's queues.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from agentmesh.kit.net import free_port_with_partner
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.proc import ServiceProcess
from agentmesh.v1 import task_pb2
from agents.client import AgentClient
from bench.common import CURRENT, ROOT, SAMPLES, LoadResult, scaled
from bench.summary import Row
from tests.support.agent_mesh import Mesh, wait_registered
from tests.support.auth import bearer, issuer, key_path

WORKERS = 4  # per agentmesh service; the one-process baseline gets 2x this, shared
SLOW_TOOL_MS = 1900  # the dummy declares a 2 s timeout: slow, but answering in time
B_STEPS = 3
B_IN_FLIGHT = 2
ROUND_S = scaled(30.0, 10.0)
A_BACKLOG = int(2 * WORKERS * (ROUND_S * 1000 / SLOW_TOOL_MS + 2))
TERMINAL = {
    task_pb2.TASK_STATE_COMPLETED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELED,
    task_pb2.TASK_STATE_REJECTED,
}
PROGRESS: dict[str, tuple[int, float]] = {}
"""By mode: A tasks completed during the round, and B's worst latency (ms)."""
CAPS = {"max_iterations": 8, "token_cap": 1_000_000, "max_tool_calls": 8, "deadline": "120s"}


def spec(slug: str, tool: str) -> dict[str, Any]:
    return {
        "slug": slug,
        "display_name": slug,
        "description": f"Fault isolation bench domain ({tool}).",
        "system_prompt": "Call the tool as told.",
        "tools": [{"name": tool}],
        "caps": CAPS,
        "rate_limits": {},
    }


def script() -> dict[str, Any]:
    usage = {"prompt_tokens": 20, "completion_tokens": 4}
    a = {"x-agentmesh-domain": "-a$"}
    b = {"x-agentmesh-domain": "-b$"}
    return {
        "name": "isolation",
        "rules": [
            {
                "when": {"header": a, "not_called": ["dummy_echo"]},
                "then": {
                    "tool_calls": [{"name": "dummy_echo", "arguments": {"message": "slow"}}],
                    "usage": usage,
                },
            },
            {"when": {"header": a}, "then": {"answer": "done", "usage": usage}},
            {
                "when": {"header": b, "step": {"min": 0, "max": B_STEPS - 1}},
                "then": {
                    "tool_calls": [{"name": "inventory_check", "arguments": {"sku": "ABC-001"}}],
                    "usage": usage,
                },
            },
            {"when": {"header": b}, "then": {"answer": "done", "usage": usage}},
        ],
    }


async def finish(agent: AgentClient, instruction: str, request_id: str) -> task_pb2.Task:
    task = await agent.submit(instruction, request_id=request_id)
    if task.state not in TERMINAL:
        async for event in agent.watch_task(task.task_id):
            if event.WhichOneof("event") == "status_update" and event.status_update.state in TERMINAL:
                break
    return await agent.get_task(task.task_id)


async def measure(mode: str, key: str, a: AgentClient, b: AgentClient) -> LoadResult:
    """A's backlog, then B's closed loop for ROUND_S; B's submit -> terminal latencies."""
    a_ids = [(await a.submit("slow", request_id=f"{key}-a-{n}")).task_id for n in range(A_BACKLOG)]
    await asyncio.sleep(1.0)  # A's tasks take their slots
    counter = itertools.count()
    latencies: list[float] = []
    failed: list[str] = []
    stop_at = time.perf_counter() + ROUND_S

    async def loop() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            task = await finish(b, "steps", f"{key}-b-{next(counter)}")
            latencies.append((time.perf_counter() - started) * 1000)
            if task.state != task_pb2.TASK_STATE_COMPLETED:
                failed.append(task_pb2.TaskState.Name(task.state))

    begin = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(B_IN_FLIGHT)))
    seconds = time.perf_counter() - begin
    if failed:
        raise AssertionError(f"{mode}: {len(failed)} B tasks did not complete: {failed[:5]}")
    a_states = [(await a.get_task(i, view=task_pb2.TASK_VIEW_BASIC)).state for i in a_ids]
    a_done = sum(state == task_pb2.TASK_STATE_COMPLETED for state in a_states)
    label = f"domain B task while A's tool is slow, {mode}"
    SAMPLES[f"{CURRENT[0]}: {label}"] = latencies
    first = sorted(latencies[: max(1, len(latencies) // 10)])
    print(
        f"  {mode}: B max {max(latencies):.0f} ms, p99 of the first 10% of B tasks "
        f"{first[int(0.99 * (len(first) - 1))]:.0f} ms; A: {a_done} of {A_BACKLOG} completed "
        f"{time.perf_counter() - begin:.1f} s after B started",
        flush=True,
    )
    PROGRESS[key] = (a_done, max(latencies))
    return LoadResult(label, B_IN_FLIGHT, len(latencies), seconds, latencies)


async def agentmesh_mode(mesh: Mesh, specs: dict[str, Path]) -> LoadResult:
    await mesh.start_agents(list(specs.values()), extra_env={"AGENTMESH_WORKER_CONCURRENCY": str(WORKERS)})
    await mesh.wait_registered(agents=list(specs))
    try:
        async with (
            AgentClient.connect(mesh.agents["mesh-a"], metadata=bearer()) as a,
            AgentClient.connect(mesh.agents["mesh-b"], metadata=bearer()) as b,
        ):
            return await measure("agentmesh (2 services x 4 workers)", "mesh", a, b)
    finally:
        for name in ("agent-mesh-a", "agent-mesh-b"):
            mesh.processes.pop(name).stop(timeout=10)


async def mono_mode(mesh: Mesh, specs: dict[str, Path]) -> LoadResult:
    ports = {slug: free_port_with_partner(1000) for slug in specs}
    process = ServiceProcess(
        name="isolation-mono",
        argv=[
            sys.executable,
            "-m",
            "bench.isolation_mono",
            "--workers",
            str(2 * WORKERS),
            *(f"{path}:{ports[slug]}" for slug, path in specs.items()),
        ],
        grpc_port=ports["mono-a"],
        env={
            **mesh.env,
            "AGENTMESH_SERVICE_TOKEN": issuer().service_token("isolation-mono"),
            "MODEL_BASE_URL": mesh.model_url,
            "MODEL_NAME": "scripted",
        },
        log_path=mesh.logs / "isolation-mono.log",
        health_service="agentmesh.v1.AgentService",
        cwd=ROOT,
    ).start()
    try:
        await process.wait_serving(60)
        await wait_registered(mesh.registry, agents=list(specs))
        async with (
            AgentClient.connect(f"127.0.0.1:{ports['mono-a']}", metadata=bearer()) as a,
            AgentClient.connect(f"127.0.0.1:{ports['mono-b']}", metadata=bearer()) as b,
        ):
            return await measure("one process, one pool of 8 workers", "mono", a, b)
    finally:
        process.stop(timeout=10)


async def run() -> list[Row]:
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(data_dir=Path(tmp) / "valkey")
        redis.start()
        paths: dict[str, Path] = {}
        for slug, tool in (
            ("mesh-a", "dummy_echo"),
            ("mesh-b", "inventory_check"),
            ("mono-a", "dummy_echo"),
            ("mono-b", "inventory_check"),
        ):
            paths[slug] = Path(tmp) / f"{slug}.yaml"
            paths[slug].write_text(yaml.safe_dump(spec(slug, tool)))
        script_path = Path(tmp) / "script.yaml"
        script_path.write_text(yaml.safe_dump(script()))
        mesh = Mesh(
            logs=out,
            redis_url=redis.url,
            env={
                "REDIS_URL": redis.url,
                "AGENTMESH_BIND_HOST": "127.0.0.1",
                "AGENTMESH_SIGNING_KEY": str(key_path()),
                "AGENTMESH_LOG_LEVEL": "WARNING",
            },
        )
        try:
            await mesh.start_registry()
            await mesh.start_tools(
                ["dummy", "inventory"],
                extra_env={
                    "dummy": {"DUMMY_LATENCY_MS": str(SLOW_TOOL_MS)},
                    "inventory": {"INVENTORY_STOCK": "ABC-001=1000000"},
                },
            )
            await mesh.start_model(script_path)
            await mesh.wait_registered(tools=["dummy_echo", "inventory_check"])
            split = await agentmesh_mode(mesh, {s: paths[s] for s in ("mesh-a", "mesh-b")})
            print(split.line(), flush=True)
            mono = await mono_mode(mesh, {s: paths[s] for s in ("mono-a", "mono-b")})
            print(mono.line(), flush=True)
        finally:
            mesh.stop()
            redis.cleanup()
    note = f"{B_STEPS}-step B tasks, {B_IN_FLIGHT} in flight, {ROUND_S:.0f} s; A: {A_BACKLOG} tasks queued"
    return [
        Row(
            "isolation",
            "domain B task p99 while A's tool takes 1.9 s: 2 services x 4 workers vs 1 process x 8 shared",
            split.p99,
            "ms",
            "-",
            None,
            baseline=mono.p99,
            ratio=split.p99 / mono.p99,
            note=note,
        ),
        Row(
            "isolation",
            "domain B task p50, same run",
            split.p50,
            "ms",
            "-",
            None,
            baseline=mono.p50,
            ratio=split.p50 / mono.p50,
            note=(
                f"B tasks done: {split.calls} vs {mono.calls}; B max {PROGRESS['mesh'][1]:.0f} vs "
                f"{PROGRESS['mono'][1]:.0f} ms; A tasks done: {PROGRESS['mesh'][0]} vs {PROGRESS['mono'][0]}"
            ),
        ),
    ]


def main() -> list[Row]:
    return asyncio.run(run())


if __name__ == "__main__":
    for row in main():
        print(row)

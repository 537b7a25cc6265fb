"""Footprint of each service process: RSS after SERVING and time from start to SERVING.

Real processes, started the way the local mesh and the chart start them (`python -m agentmesh
serve ROLE`): valkey (embedded), the registry, the training dummy tool (tool SDK), the scripted
model and one agent. Each service is started alone and timed until it answers gRPC health
SERVING (the model: HTTP /healthz); after the whole mesh has registered and settled for a
second, every process's resident set (VmRSS) and peak (VmHWM) are read from /proc.

Targets (issue 19): RSS after start <= 80 MB for an agent, <= 60 MB for an SDK tool; time to
SERVING <= 1 s per service. `python -X importtime -m agentmesh serve ROLE` shows where the time
goes; the import costs below show where the memory goes: in a fresh interpreter, each library a
service loads is imported in turn (in the order a service loads them) and the growth of the
resident set it causes is recorded (context, no target).

    python -m bench footprint
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agents.client import AgentClient
from bench.agent import SPEC, script
from bench.common import ROOT, byte_compile, cpu_s, scaled_int
from bench.summary import Row
from tests.support.agent_mesh import Mesh
from tests.support.auth import bearer, key_path

STARTS = scaled_int(3, 1)
RSS_TARGET_MB = {"agent": 80.0, "tool": 60.0}
SERVING_TARGET_S = 1.0
# What every service imports, in the order it loads them; each is measured after those above it.
# The last entry is the rest of the serving code (all roles' shared start path).
IMPORTS = (
    ("asyncio, ssl", "asyncio, ssl"),
    ("grpc", "grpc, grpc.aio"),
    ("protobuf JSON", "google.protobuf.json_format"),
    ("pydantic + Settings", "pydantic, agentmesh.kit.config"),
    ("prometheus-client", "prometheus_client"),
    ("aiohttp (HTTP listener, model client)", "aiohttp, aiohttp.web"),
    ("PyJWT + cryptography (auth)", "jwt, cryptography.hazmat.primitives.asymmetric.ec"),
    ("redis-py (loads the OTel metrics SDK)", "redis.asyncio"),
    ("the rest of `agentmesh serve` and the agent runtime", "agentmesh.cli.serve, agents.handler"),
)
_MEASURE_IMPORTS = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
steps, before = [["bare interpreter", rss()]], rss()
for label, modules in json.loads(sys.argv[1]):
    for name in modules.split(", "):
        importlib.import_module(name)
    steps.append([label, rss() - before])
    before = rss()
print(json.dumps(steps))
"""


def import_costs() -> list[tuple[str, float]]:
    """(what, MB of resident set it adds) for IMPORTS, measured in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE_IMPORTS, json.dumps(IMPORTS)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return [(label, float(mb)) for label, mb in json.loads(out)]


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a live process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


async def one_mesh(
    redis_url: str, tmp: Path, out: Path
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    spec_path = tmp / "bench.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    script_path = tmp / "script.yaml"
    script_path.write_text(yaml.safe_dump(script()))
    mesh = Mesh(
        logs=out,
        redis_url=redis_url,
        # Auth on, as deployed: every process holds the session test key (tests/support/auth.py).
        env={
            "REDIS_URL": redis_url,
            "AGENTMESH_BIND_HOST": "127.0.0.1",
            "AGENTMESH_LOG_LEVEL": "WARNING",
            "AGENTMESH_SIGNING_KEY": str(key_path()),
        },
    )
    serving: dict[str, float] = {}
    names = {"registry": "registry", "tool": "tool-dummy", "model": "model", "agent": "agent-bench"}
    try:
        for role, start in (
            ("registry", mesh.start_registry()),
            ("tool", mesh.start_tools(["dummy"])),
            ("model", mesh.start_model(script_path)),
            ("agent", mesh.start_agents([spec_path])),
        ):
            began = time.perf_counter()
            await start
            serving[role] = time.perf_counter() - began
            pid = mesh.processes[names[role]].pid
            assert pid is not None
            serving[f"{role} cpu"] = cpu_s(pid)
        await mesh.wait_registered(tools=["dummy_echo"], agents=list(mesh.agents))
        await asyncio.sleep(1.0)
        rss = {}
        for role, name in names.items():
            pid = mesh.processes[name].pid
            assert pid is not None
            rss[role] = memory_mb(pid)
        # The same after one Run with a tool step: what loads at the first call (protovalidate,
        # the JWT library when auth is on, ...) shows up here, not in the figure after SERVING.
        async with AgentClient.connect(mesh.agents["bench"], metadata=bearer()) as agent:
            task = await agent.run("steps=1")
            assert task.final_answer == "done", task
        for role, name in names.items():
            pid = mesh.processes[name].pid
            assert pid is not None
            rss[f"{role} after a Run"] = memory_mb(pid)
        return serving, rss
    finally:
        mesh.stop()


async def run() -> list[Row]:
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    starts: dict[str, list[float]] = {}
    memory: dict[str, list[tuple[float, float]]] = {}
    byte_compile()  # as in the image
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(data_dir=Path(tmp) / "valkey")
        redis.start()
        try:
            for _ in range(STARTS):
                serving, rss = await one_mesh(redis.url, Path(tmp), out)
                for role, seconds in serving.items():
                    starts.setdefault(role, []).append(seconds)
                for role, pair in rss.items():
                    memory.setdefault(role, []).append(pair)
        finally:
            redis.cleanup()
    rows = []
    load = os.getloadavg()[0]
    for role in ("registry", "tool", "model", "agent"):
        current = statistics.median(m[0] for m in memory[role])
        peak = statistics.median(m[1] for m in memory[role])
        after_run = statistics.median(m[0] for m in memory[f"{role} after a Run"])
        started = statistics.median(starts[role])
        cpu = statistics.median(starts[f"{role} cpu"])
        print(
            f"{role:<9} RSS after SERVING {current:6.1f} MB (peak {peak:6.1f} MB; "
            f"after a Run {after_run:6.1f} MB), start -> SERVING "
            f"{started:.2f} s ({', '.join(f'{s:.2f}' for s in starts[role])}; CPU {cpu:.2f} s), "
            f"load {load:.1f}"
        )
        target = RSS_TARGET_MB.get(role)
        rows.append(
            Row(
                "footprint",
                f"{role}: RSS after SERVING",
                current,
                "MB",
                f"<= {target:.0f} MB" if target else "-",
                current <= target if target else None,
                note=f"peak {peak:.0f} MB, {after_run:.0f} MB after one Run with a tool step",
            )
        )
        rows.append(
            Row(
                "footprint",
                f"{role}: start -> SERVING",
                started,
                "s",
                f"<= {SERVING_TARGET_S:.0f} s",
                started <= SERVING_TARGET_S,
                note=f"median of {STARTS}; CPU used by then {cpu:.2f} s",
            )
        )
    return rows


def import_rows() -> list[Row]:
    costs = import_costs()
    total = sum(mb for _, mb in costs)
    print("RSS added by each import, in a fresh interpreter (in this order):")
    rows = []
    for label, mb in costs:
        print(f"  {mb:6.1f} MB  {label}")
        rows.append(Row("footprint", f"import cost: {label}", mb, "MB", "-", None))
    print(f"  {total:6.1f} MB  in all (before any service object exists)")
    return rows


def main() -> list[Row]:
    return asyncio.run(run()) + import_rows()


if __name__ == "__main__":
    main()

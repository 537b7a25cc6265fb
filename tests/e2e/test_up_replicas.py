"""`agentmesh up --replicas 2`: two processes of one agent domain serve, and a task held by the one
that is SIGKILLed is taken over by the other (they share the domain's queue).

The mesh runs detached (`up --detach` … `down`), shifted by `--port-offset` above the ephemeral
ports, with a 2 s claim idle timeout so a dead replica's task is reclaimed quickly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentmesh.localmesh.devauth import mesh_issuer
from agentmesh.localmesh.plan import DOMAINS_DIR, MeshOptions
from agentmesh.v1 import task_pb2
from agents.client import AgentClient
from memory import keys
from memory.connection import AnyRedis, create_redis
from memory.tasks.store import TaskConfig
from tests.support.agent_mesh import ROOT, free_port_offset

pytestmark = pytest.mark.e2e

AGENTMESH = [sys.executable, "-m", "agentmesh"]
SPEC = DOMAINS_DIR / "training.yaml"
REPLICAS = {"training": 2}


def _cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTMESH, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )


async def _holder_of(redis: AnyRedis, pid: int) -> str:
    """A training task whose queue entry a worker of process `pid` holds now, else ""."""
    for shard in range(TaskConfig().shards):
        try:
            pending: Any = await redis.xpending_range(
                keys.queue("training", shard), "training", min="-", max="+", count=100
            )
        except Exception:  # no stream or group yet
            continue
        for item in pending:
            consumer = item["consumer"].decode()  # <host>-<pid>-<random>
            if int(consumer.rsplit("-", 2)[1]) == pid:
                entry_id = item["message_id"]
                entries: Any = await redis.xrange(keys.queue("training", shard), entry_id, entry_id)
                if entries:
                    return str(entries[0][1][b"t"].decode())
    return ""


async def test_two_replicas_of_a_domain_serve_and_a_task_survives_killing_one(tmp_path: Path) -> None:
    offset = free_port_offset(
        lambda o: MeshOptions(
            redis_url="", agents=[("training", SPEC)], tools=("dummy",), replicas=REPLICAS, port_offset=o
        )
    )
    state = tmp_path / "state"
    env = {
        **os.environ,
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "AGENTMESH_PROFILE": str(tmp_path / "profile.toml"),
        "AGENTMESH_CLAIM_IDLE_TIMEOUT": "2",
    }
    up = _cli(
        "up", "--detach", "--replicas", "2", "--agent", str(SPEC), "--tool", "dummy", "--no-traces",
        "--port-offset", str(offset), "--state-dir", str(state),
        env=env, timeout=240,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = _cli("status", "--json", "--state-dir", str(state), env=env, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        document = json.loads(status.stdout)
        agents = {s["name"]: s for s in document["services"] if s["kind"] == "agent"}
        # Two processes of the domain, on the port table's agent ports (training's, then the next).
        assert sorted(agents) == ["agent-training-1", "agent-training-2"], agents
        assert [agents[n]["grpc"] for n in sorted(agents)] == [
            f"127.0.0.1:{50064 + offset}",
            f"127.0.0.1:{50065 + offset}",
        ]
        assert {a["health"] for a in agents.values()} == {"SERVING"}
        assert agents["agent-training-1"]["pid"] != agents["agent-training-2"]["pid"]

        issuer = mesh_issuer(state)
        assert issuer is not None
        victim = int(agents["agent-training-1"]["pid"])
        metadata = [("authorization", f"Bearer {issuer.user_token()}")]
        redis = create_redis(document["redis"])
        ids: list[str] = []
        caught = ""
        async with AgentClient.connect(agents["agent-training-2"]["grpc"], metadata=metadata) as client:
            deadline = time.monotonic() + 60
            while not caught:  # submit until the victim holds a task, then SIGKILL it
                assert time.monotonic() < deadline, f"agent-training-1 never held one of {len(ids)} tasks"
                for _ in range(4):
                    n = len(ids)
                    task = await client.submit(f"Act on replica-{n}", request_id=f"replicas-{n}")
                    ids.append(task.task_id)
                watch_until = time.monotonic() + 5
                while not caught and time.monotonic() < watch_until:
                    caught = await _holder_of(redis, victim)
                    await asyncio.sleep(0.01)
            os.kill(victim, signal.SIGKILL)
            finished: dict[str, task_pb2.Task] = {}
            deadline = time.monotonic() + 90
            while len(finished) < len(ids):
                assert time.monotonic() < deadline, f"unfinished after 90 s: {set(ids) - set(finished)}"
                for task_id in set(ids) - set(finished):
                    task = await client.get_task(task_id)
                    if task.state in (task_pb2.TASK_STATE_COMPLETED, task_pb2.TASK_STATE_FAILED):
                        finished[task_id] = task
                await asyncio.sleep(0.2)
        await redis.aclose()
        assert {t.state for t in finished.values()} == {task_pb2.TASK_STATE_COMPLETED}, finished
        # The killed replica's task was taken over: another attempt finished it.
        assert finished[caught].attempt >= 2, finished[caught]
        assert "performed side effect" in finished[caught].final_answer
    finally:
        down = _cli("down", "--state-dir", str(state), env=env, timeout=120)
        assert down.returncode == 0 or "no mesh is running" in down.stderr, down.stdout + down.stderr

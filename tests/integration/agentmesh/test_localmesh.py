"""The local-mesh supervisor with real child processes and a real embedded Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

from agentmesh.kit import health
from agentmesh.kit.config import HTTP_PORT_OFFSET
from agentmesh.kit.net import free_port, free_port_with_partner
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.plan import PlannedService, ServiceKind
from agentmesh.localmesh.supervisor import LocalMesh, collect_status

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _sample(name: str, tier: int) -> PlannedService:
    port = free_port_with_partner(HTTP_PORT_OFFSET)
    return PlannedService(
        name=name,
        kind=ServiceKind.TOOL,
        argv=[sys.executable, "-m", "tests.support.sample_service"],
        env={"AGENTMESH_GRPC_PORT": str(port), "AGENTMESH_BIND_HOST": "127.0.0.1"},
        grpc_port=port,
        http_port=port + HTTP_PORT_OFFSET,
        health_service="agentmesh.v1.AgentService",
        tier=tier,
    )


async def test_start_status_restart_stop(tmp_path: Path) -> None:
    redis = EmbeddedRedis(port=free_port(), data_dir=tmp_path / "redis")
    plan = [_sample("first", 0), _sample("second", 1)]
    messages: list[str] = []
    mesh = LocalMesh(
        plan, tmp_path / "state", redis=redis, redis_url=redis.url, report=messages.append, cwd=ROOT
    )
    await mesh.start()
    try:
        state = json.loads(mesh.state_file.read_text())
        assert [s["name"] for s in state["services"]] == ["first", "second"]
        document = await collect_status(state)
        assert document["auth"] == "on"  # no process of the plan runs with AGENTMESH_INSECURE_NO_AUTH
        assert {s["name"]: s["health"] for s in document["services"]} == {
            "redis": health.SERVING,
            "first": health.SERVING,
            "second": health.SERVING,
        }
        assert any("first" in m and "SERVING" in m for m in messages)

        # A crashed service is restarted by the supervisor.
        stop = asyncio.Event()
        supervising = asyncio.create_task(mesh.supervise(stop))
        old_pid = state["services"][1]["pid"]
        os.kill(old_pid, 9)
        for _ in range(200):
            new_state = json.loads(mesh.state_file.read_text())
            if new_state["services"][1]["pid"] != old_pid:
                break
            await asyncio.sleep(0.1)
        assert new_state["services"][1]["pid"] != old_pid
        assert await health.check(plan[1].grpc_target or "", plan[1].health_service) == health.SERVING
        stop.set()
        await supervising
    finally:
        await mesh.stop()
    assert not mesh.state_file.exists()
    for pid in (s["pid"] for s in state["services"]):
        with contextlib.suppress(ChildProcessError):
            assert not _alive(pid)
    assert not redis.running()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone once reaped.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


async def test_a_service_that_cannot_start_stops_everything(tmp_path: Path) -> None:
    broken = PlannedService(
        name="broken",
        kind=ServiceKind.TOOL,
        argv=[sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"],
        env={},
        grpc_port=free_port(),
        http_port=None,
        tier=1,
    )
    good = _sample("good", 0)
    mesh = LocalMesh(
        [good, broken], tmp_path / "state", redis=None, redis_url="redis://unused", report=lambda _: None
    )
    with pytest.raises(RuntimeError, match="broken exited with code 3") as caught:
        await mesh.start()
    assert "boom: bad config" in str(caught.value)
    assert await health.check(good.grpc_target or "", timeout=0.3) == health.UNKNOWN


async def test_kill_and_restart_one_service_by_name(tmp_path: Path) -> None:
    plan = [_sample("steady", 0), _sample("victim", 0)]
    mesh = LocalMesh(plan, tmp_path / "state", redis=None, redis_url="redis://unused", report=lambda _: None)
    await mesh.start()
    try:
        assert mesh.names(ServiceKind.TOOL) == ["steady", "victim"]
        old_pid = mesh.process("victim").pid
        assert mesh.kill("victim") == -9  # a real SIGKILL, waited for
        assert await health.check(plan[1].grpc_target or "", timeout=0.3) == health.UNKNOWN
        assert mesh.process("steady").running()
        restarted = await mesh.restart("victim")
        assert restarted.pid != old_pid and restarted.running()
        assert await health.check(plan[1].grpc_target or "", plan[1].health_service) == health.SERVING
        assert json.loads(mesh.state_file.read_text())["services"][1]["pid"] == restarted.pid
        with pytest.raises(KeyError, match=r"no service 'ghost'.*steady, victim"):
            mesh.kill("ghost")
    finally:
        await mesh.stop()

"""The chaos harness itself: a port taken between its pick and the child's bind costs a restart on
new ports, not the scenario (the port race of a machine shared by many test runs)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agentmesh.kit.net import free_port_with_partner
from tests.chaos import harness
from tests.chaos.drills import TRAINING, Workload
from tests.chaos.harness import chaos_mesh

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]


async def test_a_port_taken_before_its_service_binds_it_costs_a_restart_on_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as thief:
        # Someone else binds the port the harness hands the registry, before the registry starts.
        stolen = free_port_with_partner(1000)
        thief.bind(("127.0.0.1", stolen))
        thief.listen()
        # The harness's picks: valkey's, then the registry's (stolen), then the others'.
        picks = iter([free_port_with_partner(1000), stolen])
        monkeypatch.setattr(
            harness, "free_port_with_partner", lambda offset: next(picks, 0) or free_port_with_partner(offset)
        )
        async with chaos_mesh(tmp_path, agents={TRAINING: 1}, tools=("dummy",)) as mesh:
            assert mesh.mesh.planned("registry").grpc_port != stolen
            workload = Workload(mesh, prefix="moved")
            await workload.batch(acts=1)
            (task,) = (await workload.settle(timeout=60)).values()
            assert "performed side effect" in task.final_answer
    assert "a port was taken before its service bound it" in capsys.readouterr().out


async def test_a_port_taken_before_valkey_binds_it_costs_a_new_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as thief:
        stolen = free_port_with_partner(1000)
        thief.bind(("127.0.0.1", stolen))
        thief.listen()
        picks = iter([stolen])
        monkeypatch.setattr(
            harness, "free_port_with_partner", lambda offset: next(picks, 0) or free_port_with_partner(offset)
        )
        async with chaos_mesh(tmp_path, agents={TRAINING: 1}, tools=("dummy",)) as mesh:
            assert mesh.redis is not None and mesh.redis.port != stolen
            assert await mesh.store_redis.ping()
    assert "a port was taken before valkey bound it" in capsys.readouterr().out

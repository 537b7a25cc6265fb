"""The demo, as its users run it: `agentmesh demo` against a mesh of real processes, and
`agentmesh up --demo` (the README's first command), shifted by `--port-offset` above the
kernel's ephemeral port range so that no other test's outgoing connection can hold one.

Every story checks its own outcome (tools called, side effects counted by the services
themselves); these tests check that every story passed and that the scripted model was named
as such."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.plan import (
    DEFAULT_TOOLS,
    MeshOptions,
    default_agents,
)
from tests.support.agent_mesh import ROOT, Mesh, free_port_offset, running_mesh
from tests.support.auth import key_path

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

AGENTMESH = [sys.executable, "-m", "agentmesh"]
DEMO_SCRIPT = ROOT / "agents" / "scripts" / "demo.yaml"
STORIES = ("refund", "refund-approval", "denied", "fulfillment", "training-dummy")


def cli_env(**extra: str) -> dict[str, str]:
    # Wide output so the summary table keeps one row per line.
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", **extra}


def passed_stories(output: str) -> list[str]:
    rows = [line.split("│") for line in output.splitlines() if line.count("│") >= 4]
    return [cells[1].strip() for cells in rows if cells[2].strip() == "passed"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(valkey: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    async with running_mesh(
        valkey.url,
        tmp_path_factory.mktemp("demo-logs"),
        tools=DEFAULT_TOOLS,
        model_script=DEMO_SCRIPT,
        agents=[path for _, path in default_agents()],
        registered_tools=["payments_refund", "shipping_create_shipment", "dummy_act", "dummy_act_once"],
        env={"AGENTMESH_LOG_FORMAT": "text"},
    ) as running:
        yield running


def demo(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTMESH, "demo", "--registry", mesh.registry, *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=cli_env(AGENTMESH_SIGNING_KEY=str(key_path())),  # the stories mint their users' tokens
    )


async def test_every_story_passes_and_the_scripted_model_is_named(mesh: Mesh) -> None:
    result = await asyncio.to_thread(demo, mesh)
    assert result.returncode == 0, result.stdout + result.stderr
    assert passed_stories(result.stdout) == list(STORIES), result.stdout
    assert "SCRIPTED MODEL" in result.stdout and "scripted model server" in result.stdout.lower()


async def test_stories_can_be_played_again_on_the_same_mesh(mesh: Mesh) -> None:
    result = await asyncio.to_thread(demo, mesh, "--story", "refund", "--story", "training-dummy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert passed_stories(result.stdout) == ["refund", "training-dummy"], result.stdout


async def test_unknown_story_and_missing_mesh_get_clear_errors(mesh: Mesh) -> None:
    unknown = await asyncio.to_thread(demo, mesh, "--story", "dragons")
    assert unknown.returncode == 2 and "unknown story: dragons" in unknown.stderr
    nowhere = await asyncio.to_thread(
        subprocess.run,
        [*AGENTMESH, "demo", "--registry", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=cli_env(),
    )
    assert nowhere.returncode == 3 and "agentmesh up" in nowhere.stderr


async def test_agentmesh_up_demo_starts_plays_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    offset = free_port_offset(
        lambda o: MeshOptions(redis_url="", agents=default_agents(), tools=DEFAULT_TOOLS, port_offset=o)
    )
    options = MeshOptions(redis_url="", agents=default_agents(), tools=DEFAULT_TOOLS, port_offset=offset)
    output = tmp_path / "up.log"
    profile = tmp_path / "profile.toml"
    env = cli_env(AGENTMESH_PROFILE=str(profile))
    with output.open("w") as sink:
        process = await asyncio.create_subprocess_exec(
            *AGENTMESH,
            "up",
            "--demo",
            "--state-dir",
            str(tmp_path / "state"),
            "--port-offset",
            str(offset),
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 240
            while "the mesh keeps serving" not in output.read_text():
                assert process.returncode is None, output.read_text()
                assert time.monotonic() < deadline, output.read_text()
                await asyncio.sleep(0.5)
            status = await asyncio.to_thread(
                subprocess.run,
                [*AGENTMESH, "status", "--json", "--state-dir", str(tmp_path / "state")],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
                env=env,
            )
            assert status.returncode == 0, status.stdout + status.stderr
            assert json.loads(status.stdout)["auth"] == "on"
            tokens = tomllib.loads(profile.read_text())
            assert tokens["token"] != tokens["approver_token"]  # the demo user and a separate approver
            # The operator console runs beside the mesh; `up` prints its URL, `status` lists it.
            consoles = [s for s in json.loads(status.stdout)["services"] if s["kind"] == "console"]
            assert [(c["http"], c["health"]) for c in consoles] == [
                (f"127.0.0.1:{options.console_port}", "SERVING")
            ]
            assert f"operator console: http://127.0.0.1:{options.console_port}/" in output.read_text()
            process.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(process.wait(), 90) == 0, output.read_text()
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
    log = output.read_text()
    assert passed_stories(log) == list(STORIES), log
    assert "stopping the mesh" in log and not (tmp_path / "state" / "mesh.json").exists()
    # The CLI profile now points at the mesh (DESIGN.md: `agentmesh up` writes it).
    assert f'registry = "{options.registry_address}"' in profile.read_text()

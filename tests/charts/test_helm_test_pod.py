"""The `helm test` pod's checks, run here for real against real servers.

Each container of the rendered test pod is executed with its own command and
arguments; only the in-cluster address is swapped for a loopback one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentmesh.kit.testing import running_host
from tests.charts.chart import ROOT, render

AGENTMESH = str(Path(sys.executable).parent / "agentmesh")


def checks() -> dict[str, dict[str, Any]]:
    (pod,) = render("09-tools-scripted-model-values").of_kind("Pod")
    return {c["name"]: c for c in pod["spec"]["containers"]}


def argv(container: dict[str, Any], *replace: tuple[int, str]) -> list[str]:
    args = list(container["args"])
    for index, value in replace:
        args[index] = value
    command = [
        AGENTMESH if c == "agentmesh" else sys.executable if c == "python" else c
        for c in container["command"]
    ]
    return [*command, *args]


async def run(command: list[str], **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_health_check_passes_only_for_the_service_the_server_serves() -> None:
    check = checks()["registry"]
    service = check["args"][2]
    assert service == "agentmesh.v1.ToolRegistryService"
    async with running_host([(service, lambda server: None)]) as (host, _):
        code, output = await run(argv(check, (0, f"127.0.0.1:{host.grpc_port}")))
        assert (code, output.strip()) == (0, "SERVING")
        agent_check = checks()["agent-refunds"]
        code, output = await run(argv(agent_check, (0, f"127.0.0.1:{host.grpc_port}")))
        assert code != 0, "a server without AgentService must fail the agent's check"


async def test_health_check_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _ = await run(argv(checks()["tool-payments"], (0, f"127.0.0.1:{port}"), (4, "1")))
    assert code == 3, "unreachable"


async def test_model_check_connects_to_the_port() -> None:
    check = checks()["model"]
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        code, output = await run(argv(check, (1, "127.0.0.1"), (2, str(port))))
        assert (code, output.strip()) == (0, "SERVING")
    code, _ = await run(argv(check, (1, "127.0.0.1"), (2, str(port))))
    assert code != 0


def test_redis_check_pings_the_url_from_the_env(redis_url: str) -> None:
    check = checks()["redis"]
    assert [e["name"] for e in check["env"]] == ["REDIS_URL"]
    result = subprocess.run(
        argv(check), cwd=ROOT, env={**os.environ, "REDIS_URL": redis_url}, capture_output=True, timeout=60
    )
    assert (result.returncode, result.stdout.decode().strip()) == (0, "PONG"), result.stderr.decode()


def test_redis_check_fails_without_redis() -> None:
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run(argv(checks()["redis"]), cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert result.returncode != 0

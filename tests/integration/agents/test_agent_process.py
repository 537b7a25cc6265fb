"""`agentmesh serve agent` refuses a bad configuration at start, with exit code 2 and the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTMESH_DOMAIN_SPEC": "/nonexistent/spec.yaml"}, b"cannot read domain spec"),
        ({}, b"AGENTMESH_DOMAIN_SPEC is required"),
        (
            {"AGENTMESH_DOMAIN_SPEC": str(ROOT / "agents" / "domains" / "fulfillment.yaml")},
            b"MODEL_BASE_URL is required",
        ),
    ],
)
def test_agent_process_refuses_a_bad_configuration(env: dict[str, str], message: bytes) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMESH_", "MODEL_"))}
    argv = [sys.executable, "-m", "agentmesh", "serve", "agent"]
    done = subprocess.run(
        argv, env={**clean, "AGENTMESH_GRPC_PORT": "0", **env}, cwd=ROOT, capture_output=True, timeout=60
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr

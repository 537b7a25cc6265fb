"""The image and the chart agree: user, entrypoint, ports, and where examples live."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from agentmesh.cli.serve import entrypoint_for
from agentmesh.kit.config import DEFAULT_GRPC_PORTS, HEALTH_PORT_OFFSET, HTTP_PORT_OFFSET, Role, Settings
from tests.charts.chart import ROOT, render

DOCKERFILE = (ROOT / "Dockerfile").read_text()
FINAL_STAGE = DOCKERFILE.rsplit("\nFROM ", 1)[1]


def instruction(name: str) -> list[str]:
    return re.findall(rf"^{name} (.+)$", FINAL_STAGE, flags=re.MULTILINE)


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_the_chart_user_with_agentmesh_serve() -> None:
    (user,) = instruction("USER")
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0 and gid != 0, "non-root, numeric (runAsNonRoot can verify it)"
    pod_security = render("defaults").values["podSecurityContext"]
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (uid, gid)
    assert instruction("ENTRYPOINT") == ['["agentmesh", "serve"]']
    assert not re.search(r"apt-get|build-essential|gcc", FINAL_STAGE), "no build tools in the final stage"


def test_example_tools_are_importable_where_the_image_puts_them() -> None:
    """role=tool with AGENTMESH_TOOL=payments imports examples.payments: /app must be on sys.path."""
    (target,) = re.findall(r"^COPY examples (\S+)$", FINAL_STAGE, flags=re.MULTILINE)
    assert f"PYTHONPATH={Path(target).parent}" in FINAL_STAGE
    module = entrypoint_for(Settings.from_env({"AGENTMESH_ROLE": "tool", "AGENTMESH_TOOL": "payments"}))
    assert module.startswith(f"{Path(target).name}.")


def test_the_image_exposes_every_default_port() -> None:
    exposed = {int(p) for line in instruction("EXPOSE") for p in line.split()}
    for role, port in DEFAULT_GRPC_PORTS.items():
        assert port in exposed
        if role not in (Role.MODEL, Role.CONSOLE):  # HTTP-only roles serve on that one port
            assert {port + HTTP_PORT_OFFSET, port + HEALTH_PORT_OFFSET} <= exposed


def test_the_charts_default_ports_are_the_contracts() -> None:
    values = render("defaults").values
    assert values["registry"]["grpcPort"] == DEFAULT_GRPC_PORTS[Role.REGISTRY]
    assert values["agentDefaults"]["grpcPort"] == DEFAULT_GRPC_PORTS[Role.AGENT]
    assert values["toolDefaults"]["grpcPort"] == DEFAULT_GRPC_PORTS[Role.TOOL]
    assert values["model"]["scripted"]["port"] == DEFAULT_GRPC_PORTS[Role.MODEL]
    assert values["console"]["port"] == DEFAULT_GRPC_PORTS[Role.CONSOLE]

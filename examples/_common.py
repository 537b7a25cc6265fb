"""What every example tool shares: where its .proto is, and its default port (kit/config.py's table).

State in the examples lives in process memory by design: each is a stand-in
for a real backend, and restarting one resets it (examples/README.md).
"""

from __future__ import annotations

from pathlib import Path

from agentmesh.kit.config import TOOL_PORTS, Role, Settings
from tool_registry.sdk import ToolService

EXAMPLES = Path(__file__).resolve().parent


def load(name: str) -> ToolService:
    return ToolService.from_proto(EXAMPLES / name / f"{name}.proto")


def settings_for(name: str) -> Settings:
    settings = Settings.from_env(role=Role.TOOL)
    if settings.grpc_port is None:
        # Standalone, each example has its own port (the local mesh and the chart set AGENTMESH_GRPC_PORT).
        return settings.model_copy(update={"grpc_port": TOOL_PORTS[name]})
    return settings

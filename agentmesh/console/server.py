"""`agentmesh serve console`: the operator console's process.

HTTP only, on AGENTMESH_HTTP_PORT, else AGENTMESH_GRPC_PORT, else 50080 (as the scripted
model does: a role with no gRPC port of its own), on the one bootstrap (`ServiceHost` in its
HTTP-only form, started by `run_process`). SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import logging

from agentmesh.console.app import create_app
from agentmesh.console.auth import Authentication
from agentmesh.console.mesh import MeshClient
from agentmesh.kit.config import Role, Settings
from agentmesh.kit.process import load_settings, run_process
from agentmesh.kit.server import ServiceHost, http_only_port

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_S = 2.0


def console_port(settings: Settings) -> int:
    return http_only_port(settings)


def console_host(settings: Settings) -> ServiceHost:
    """The console's application on the one bootstrap (`ServiceHost`, HTTP-only)."""
    auth = Authentication.from_settings(settings)
    if auth.problem:
        log.warning("%s", auth.problem)
    app = create_app(MeshClient(settings), auth)
    # Open timelines (SSE) would hold a stop for the whole drain grace: they reconnect anyway.
    grace = min(settings.drain_grace_s, SHUTDOWN_TIMEOUT_S)
    host = ServiceHost(
        settings.model_copy(update={"drain_grace_s": grace}), name="console", http_only=True, http_app=app
    )

    async def announce() -> None:
        log.info("console serving on port %s (registry %s)", host.http_port, settings.registry)

    host.on_start(announce)
    return host


async def serve(settings: Settings) -> None:
    await console_host(settings).run()  # until SIGTERM/SIGINT, then drain and stop


def main() -> None:
    settings = load_settings(Role.CONSOLE)
    run_process(settings, "console", lambda: serve(settings))

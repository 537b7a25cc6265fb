"""`agentmesh serve console`: the operator console's process.

HTTP only, on AGENTMESH_HTTP_PORT, else AGENTMESH_GRPC_PORT, else 50080 (as the
scripted model does: a role with no gRPC port of its own). SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from agentmesh.console.app import create_app
from agentmesh.console.auth import Authentication
from agentmesh.console.mesh import MeshClient
from agentmesh.kit.config import Role, Settings
from agentmesh.kit.logs import configure_logging
from agentmesh.kit.signals import stop_signals

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_S = 2.0


def console_port(settings: Settings) -> int:
    if settings.http_port is not None:
        return settings.http_port
    return settings.effective_grpc_port


async def serve(settings: Settings) -> None:
    auth = Authentication.from_settings(settings)
    if auth.problem:
        log.warning("%s", auth.problem)
    app = create_app(MeshClient(settings), auth)
    # Open timelines (SSE) would hold a stop for aiohttp's default 60 s: they reconnect anyway.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    host = settings.bind_host.strip("[]")
    site = web.TCPSite(runner, host, console_port(settings))
    async with stop_signals() as stop:
        await site.start()
        log.info("console serving on %s (registry %s)", site.name, settings.registry)
        await stop.wait()
        await runner.cleanup()


def main() -> None:
    settings = Settings.from_env(None, role=Role.CONSOLE.value)
    configure_logging(settings.service_name or "console", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))

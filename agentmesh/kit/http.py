"""The HTTP listener of every service: beside its gRPC port, or alone for an HTTP-only role.

Serves /metrics (Prometheus), /healthz (the process is alive), /readyz (the
services report SERVING) and whatever routes a service adds: the agent
card at /.well-known/agent-card.json, the registry's JWKS at
/.well-known/jwks.json. An HTTP-only role (the scripted model, the console)
brings its own aiohttp application; the three standard paths are added to it
where it does not answer them itself.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentmesh.kit import metrics

JsonProvider = Callable[[], Awaitable[Any]]


class SideListener:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: Callable[[], bool],
        app: web.Application | None = None,
        shutdown_timeout: float = 60.0,
    ) -> None:
        self._host = host.strip("[]") or "::"
        self._port = port
        self._ready = ready
        self._app = app if app is not None else web.Application()
        self._shutdown_timeout = shutdown_timeout
        taken = {route.resource.canonical for route in self._app.router.routes() if route.resource}
        for path, handler in (
            ("/metrics", self._metrics),
            ("/healthz", self._healthz),
            ("/readyz", self._readyz),
        ):
            if path not in taken:
                self._app.router.add_get(path, handler)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def add_json_route(self, path: str, provider: JsonProvider) -> None:
        """GET `path` answers the JSON document `provider` returns (None -> 404)."""

        async def handler(_: web.Request) -> web.Response:
            document = await provider()
            if document is None:
                return web.json_response({"error": "not found"}, status=404)
            return web.Response(text=json.dumps(document, indent=2), content_type="application/json")

        self._app.router.add_get(path, handler)

    async def start(self) -> int:
        self._runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=self._shutdown_timeout
        )
        await self._runner.setup()
        site: web.BaseSite
        if self._host == "::":
            # asyncio binds "::" IPv6-only; Prometheus scrapes pod IPv4 addresses. One dual-stack socket.
            site = web.SockSite(self._runner, _dual_stack_socket(self._port))
        else:
            site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="SERVING\n")
        return web.Response(text="NOT_SERVING\n", status=503)


def _dual_stack_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock

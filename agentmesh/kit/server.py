"""The one server bootstrap every service in the mesh reuses.

    host = ServiceHost(settings, name="refunds")
    host.add_service(AgentService_pb2.DESCRIPTOR.services_by_name["AgentService"],
                     lambda server: add_AgentServiceServicer_to_server(servicer, server))
    await host.run()          # start, serve until SIGTERM/SIGINT, drain, stop

What it provides: grpc.aio server with the edge interceptor (error map,
backpressure, metrics) and, when OTEL_* asks for it, tracing; `grpc.health.v1`
per service name plus the overall "" entry; server reflection; message-size
limits and keepalive; a bound port (0 = free port, reported back); the HTTP
side listener on gRPC port + 1000; a plaintext health-only port when mTLS is
on; graceful shutdown: health NOT_SERVING first, drain hooks, an optional
delay for load balancers, then `server.stop(grace)`.

An HTTP-only role (the scripted model, the console) uses the same host with
`http_only=True` and its own aiohttp application: no gRPC server, the application
on the role's port (AGENTMESH_HTTP_PORT, else AGENTMESH_GRPC_PORT, else the
role's default) with /metrics, /healthz and /readyz added where it has none;
the same start/drain/stop hooks, signals and shutdown (in-flight requests get
AGENTMESH_DRAIN_GRACE).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from agentmesh.kit import metrics, tracing
from agentmesh.kit.auth.gate import Authenticator
from agentmesh.kit.config import Settings
from agentmesh.kit.http import JsonProvider, SideListener
from agentmesh.kit.interceptors import ServerEdgeInterceptor
from agentmesh.kit.signals import stop_signals

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
SERVING = health_pb2.HealthCheckResponse.SERVING
MAX_METADATA_BYTES = 64 * 1024
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """grpc.aio server channel arguments derived from the settings."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Answer keepalive pings from clients (agentmesh channels ping every 30 s).
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),
        # Above gRPC's 8/16 KiB defaults, so an oversized bearer token reaches the edge and gets
        # UNAUTHENTICATED naming the cause instead of a transport error (tokens: at most 16 KiB).
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    ]
    if settings.max_connection_age_s > 0:
        age_ms = int(settings.max_connection_age_s * 1000)
        options += [
            ("grpc.max_connection_age_ms", age_ms),
            ("grpc.max_connection_age_grace_ms", int(max(settings.drain_grace_s, 5) * 1000)),
        ]
    return options


class CertificateFiles:
    """AGENTMESH_TLS_CERT/_KEY/_CA, re-read when one of them changes (cert-manager renewals).

    gRPC asks `fetch` before each new TLS handshake; it answers None while the files
    are as they were, the new configuration once they changed (established
    connections keep theirs). A half-written or unreadable set keeps the previous one.
    """

    def __init__(self, cert: Path, key: Path, ca: Path | None) -> None:
        self.paths = (Path(cert), Path(key), *((Path(ca),) if ca else ()))
        self.mutual = ca is not None
        self._stamp = self._stamps()
        self.initial = self._configuration()

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self.paths:
            try:
                stat = path.stat()
            except OSError:
                return ()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def _configuration(self) -> Any:
        cert, key, *ca = (path.read_bytes() for path in self.paths)
        if b"PRIVATE KEY" not in key or b"CERTIFICATE" not in cert:
            raise ValueError(f"{self.paths[0]} / {self.paths[1]} are not a PEM certificate and key")
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=ca[0] if ca else None
        )

    def fetch(self) -> Any:
        stamp = self._stamps()
        if not stamp or stamp == self._stamp:
            return None
        try:
            configuration = self._configuration()
        except (OSError, ValueError) as exc:
            log.warning("keeping the previous TLS certificate: %s", exc)
            return None
        self._stamp = stamp
        log.info("TLS certificate reloaded", extra={"cert": str(self.paths[0])})
        return configuration


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not settings.tls_enabled:
        return None
    assert settings.tls_cert is not None and settings.tls_key is not None
    files = CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_ca)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, files.fetch, require_client_authentication=files.mutual
    )


class ServiceHost:
    """Owns a grpc.aio server, its health and reflection, and its HTTP side listener."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        interceptors: tuple[grpc.aio.ServerInterceptor, ...] = (),
        bounded: bool = True,
        reflection_pool: DescriptorPool | None = None,
        authenticator: Authenticator | None = None,
        http_only: bool = False,
        http_app: web.Application | None = None,
    ) -> None:
        self.settings = settings
        self.name = name or settings.service_name or settings.role.value
        self.health = HealthServicer()
        self._service_names: list[str] = []
        self._registrations: list[Callable[[grpc.aio.Server], None]] = []
        self._start_hooks: list[Hook] = []
        self._drain_hooks: list[Hook] = []
        self._stop_hooks: list[Hook] = []
        self._bounded = bounded
        # Verifies every caller (agentmesh.kit.auth); None only for processes that take no calls of users.
        self.authenticator = authenticator
        self._extra_interceptors = interceptors
        # Services defined in a private descriptor pool (the tool SDK's dynamic services) are
        # reflected from it; everything else from the default pool.
        self._reflection_pool = reflection_pool
        self.edge: ServerEdgeInterceptor | None = None
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.http_only = http_only
        if not http_only:
            self._http = SideListener(
                settings.bind_host, settings.effective_http_port, ready=self.is_serving, app=http_app
            )
        else:
            self._http = SideListener(
                settings.bind_host,
                http_only_port(settings),
                ready=self.is_serving,
                app=http_app,
                shutdown_timeout=settings.drain_grace_s,
            )
        self._started = False
        self._serving = False
        # Set when shutdown begins: long-lived streams (WatchTask, WatchTools) end
        # early on it so clients resume on another replica instead of holding the drain.
        self.draining = asyncio.Event()
        self._stopped = asyncio.Event()
        self.grpc_port: int | None = None
        self.health_port: int | None = None

    # -- composition ------------------------------------------------------

    def add_service(
        self, service: ServiceDescriptor | str, register: Callable[[grpc.aio.Server], None]
    ) -> None:
        """Register a servicer; `service` names it for health and reflection."""
        full_name = service if isinstance(service, str) else service.full_name
        self._service_names.append(full_name)
        self._registrations.append(register)

    def add_http_route(self, path: str, provider: JsonProvider) -> None:
        self._http.add_json_route(path, provider)

    def on_start(self, hook: Hook) -> None:
        """Called once the server is SERVING (its ports are known): start background work that calls it."""
        self._start_hooks.append(hook)

    def on_drain(self, hook: Hook) -> None:
        """Called once health is NOT_SERVING: stop taking new work (queue consumers...)."""
        self._drain_hooks.append(hook)

    def on_stop(self, hook: Hook) -> None:
        """Called after the gRPC server stopped: close clients, flush telemetry."""
        self._stop_hooks.append(hook)

    @property
    def http_port(self) -> int | None:
        return self._http.port

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(self._service_names)

    def is_serving(self) -> bool:
        return self._serving

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        if self.http_only:
            await self._start_http_only()
            return
        settings = self.settings
        self.edge = ServerEdgeInterceptor(
            max_in_flight=settings.max_in_flight if self._bounded else 0,
            bounded_services=self._service_names,
            authenticator=self.authenticator,
        )
        interceptors = (*tracing.server_interceptors(), self.edge, *self._extra_interceptors)
        server = grpc.aio.server(interceptors=interceptors, options=server_options(settings))
        for register in self._registrations:
            register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                *self._service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
            pool=self._reflection_pool,
        )
        address = f"{settings.bind_host}:{settings.effective_grpc_port}"
        credentials = _server_credentials(settings)
        if credentials is None:
            self.grpc_port = server.add_insecure_port(address)
        else:
            self.grpc_port = server.add_secure_port(address, credentials)
        if not self.grpc_port:
            raise OSError(f"could not bind gRPC port {address}")
        await server.start()
        self._server = server
        if credentials is not None:
            await self._start_plaintext_health()
        await self._http.start()
        for service_name in ("", *self._service_names):
            await self.health.set(service_name, SERVING)
        self._serving = True
        metrics.SERVING.labels(self.name).set(1)
        for hook in self._start_hooks:
            await hook()
        log.info(
            "serving",
            extra={
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "health_port": self.health_port,
                "services": self._service_names,
                "tls": credentials is not None,
            },
        )

    async def _start_http_only(self) -> None:
        await self._http.start()
        self._serving = True
        metrics.SERVING.labels(self.name).set(1)
        for hook in self._start_hooks:
            await hook()
        log.info("serving", extra={"http_port": self.http_port})

    async def _start_plaintext_health(self) -> None:
        """Health on a plaintext port so kubelet probes need no client certificate."""
        health_server = grpc.aio.server(options=server_options(self.settings))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, health_server)
        port = health_server.add_insecure_port(
            f"{self.settings.bind_host}:{self.settings.effective_health_port}"
        )
        await health_server.start()
        self._health_server = health_server
        self.health_port = port

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, drain hooks, delay, stop(grace), stop hooks."""
        if not self._started:
            return
        self._started = False
        grace = self.settings.drain_grace_s if grace is None else grace
        self._serving = False
        self.draining.set()
        metrics.SERVING.labels(self.name).set(0)
        for service_name in ("", *self._service_names):
            await self.health.set(service_name, NOT_SERVING)
        log.info("draining", extra={"grace_s": grace, "in_flight": self.edge.in_flight if self.edge else 0})
        for hook in self._drain_hooks:
            await _run_hook(hook, "drain")
        if self.settings.drain_delay_s > 0:
            await asyncio.sleep(self.settings.drain_delay_s)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None
        for hook in self._stop_hooks:
            await _run_hook(hook, "stop")
        await self._http.stop()
        self._stopped.set()
        log.info("stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then shut down gracefully."""
        await self.start()
        try:
            async with stop_signals() as stop_requested:
                await stop_requested.wait()
                log.info("signal received, shutting down")
        finally:
            await self.stop()

    async def __aenter__(self) -> ServiceHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(grace=0)


def http_only_port(settings: Settings) -> int:
    """The port of an HTTP-only role: AGENTMESH_HTTP_PORT, else AGENTMESH_GRPC_PORT, else the role's
    default (the scripted model 50099, the console 50080); 0 picks a free port."""
    if settings.http_port is not None:
        return settings.http_port
    return settings.effective_grpc_port


async def _run_hook(hook: Hook, phase: str) -> None:
    try:
        await hook()
    except Exception:  # one failing hook must not keep the others from running
        log.exception("%s hook failed", phase)

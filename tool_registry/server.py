"""The registry process: `agentmesh serve registry` and `python -m tool_registry`.

Settings come from the environment (docs/configuration.md). Authentication is
on unless AGENTMESH_INSECURE_NO_AUTH is set: every call needs a token
(writes: `registry:write`, see tool_registry.service), and the mesh JWKS (the
signing key's public half and an AGENTMESH_JWKS file) is served at the HTTP
listener's `/.well-known/jwks.json`. The registry's
transport accepts messages up to 64 MiB even when AGENTMESH_MAX_MESSAGE_BYTES
is lower: descriptor sets are limited to 4 MiB by the RegisterTool handler,
which answers an oversized one with INVALID_ARGUMENT saying what to do, where
the transport could only say RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentmesh.kit.auth import Authenticator, MeshAuth, mesh_auth
from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import Settings
from agentmesh.kit.process import load_settings, run_process
from agentmesh.kit.server import ServiceHost
from agentmesh.kit.streams import StreamSlots
from agentmesh.v1 import tool_registry_service_pb2_grpc as rs_grpc
from memory.connection import AnyRedis, create_redis, describe
from tool_registry.catalog import SchemaExporter
from tool_registry.service import AUDIENCES, RULES, SERVICE, ToolRegistryServicer, register
from tool_registry.store import RegistryStore

log = logging.getLogger(__name__)

REGISTRY_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def registry_settings(settings: Settings) -> Settings:
    """The settings with the transport limit raised to REGISTRY_MAX_MESSAGE_BYTES (never lowered)."""
    if settings.max_message_bytes >= REGISTRY_MAX_MESSAGE_BYTES:
        return settings
    return settings.model_copy(update={"max_message_bytes": REGISTRY_MAX_MESSAGE_BYTES})


def default_schema_exporter() -> SchemaExporter:
    """The JSON Schema (2020-12) exporter of tool_registry.jsonschema."""
    from tool_registry.jsonschema import export_tool_schemas

    return export_tool_schemas


async def serve(settings: Settings, *, schema_exporter: SchemaExporter | None = None) -> None:
    settings = registry_settings(settings)
    auth = mesh_auth(settings)
    host = ServiceHost(
        settings,
        name=settings.service_name or "registry",
        authenticator=registry_authenticator(auth),
    )
    add_jwks_route(host, auth)
    redis = create_redis(
        settings.redis_url, client_name="agentmesh-registry", max_connections=settings.redis_max_connections
    )
    store = RegistryStore(redis)
    servicer = ToolRegistryServicer(
        store,
        schema_exporter=schema_exporter,
        draining=host.draining,
        streams=StreamSlots(settings.max_streams, settings.max_streams_per_caller),
        progress_s=settings.watch_progress_s,
    )
    host.add_service(SERVICE, register(servicer))

    async def close() -> None:
        await servicer.close()
        await redis.aclose()

    host.on_stop(close)
    if settings.discovery_namespace_list:
        start_discovery(settings, host, redis)
    log.info("registry store", extra={"redis": describe(settings.redis_url)})
    await host.run()


JWKS_PATH = "/.well-known/jwks.json"


def registry_authenticator(auth: MeshAuth) -> Authenticator:
    """The registry's edge check: its audiences and RULES (development mode: no scopes checked)."""
    return auth.authenticator(audiences=AUDIENCES, rules={} if auth.insecure else RULES)


def add_jwks_route(host: ServiceHost, auth: MeshAuth) -> None:
    """The mesh JWKS at `/.well-known/jwks.json` on the HTTP listener (what tools verify tool tokens with)."""

    async def jwks() -> dict[str, Any]:
        return auth.jwks()

    host.add_http_route(JWKS_PATH, jwks)


def start_discovery(settings: Settings, host: ServiceHost, redis: AnyRedis) -> None:
    """Kubernetes discovery beside the registry: it writes through this registry's own gRPC API."""
    from tool_registry.discovery import ToolDiscovery, discovery_metadata

    state: dict[str, Any] = {}

    async def start() -> None:
        channel = create_channel(f"localhost:{host.grpc_port}", settings=settings, control_plane=True)
        discovery = ToolDiscovery(
            settings,
            rs_grpc.ToolRegistryServiceStub(channel),
            redis,
            metadata=discovery_metadata(settings),
        )
        state.update(channel=channel, discovery=discovery, task=asyncio.create_task(discovery.run()))

    async def stop() -> None:
        if "discovery" in state:
            await state["discovery"].stop()
            await asyncio.gather(state["task"], return_exceptions=True)
            await state["channel"].close()

    async def status() -> Any:
        return state["discovery"].status() if "discovery" in state else {"active": False}

    host.on_start(start)
    host.on_drain(stop)
    host.add_http_route("/discovery", status)


def main() -> None:
    settings = load_settings()
    run_process(settings, "registry", lambda: serve(settings, schema_exporter=default_schema_exporter()))

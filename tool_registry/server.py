"""The registry process: `agentmesh serve registry` and `python -m tool_registry`.

Settings come from the environment (docs/configuration.md). The registry's
transport accepts messages up to 64 MiB even when AGENTMESH_MAX_MESSAGE_BYTES
is lower: descriptor sets are limited to 4 MiB by the RegisterTool handler,
which answers an oversized one with INVALID_ARGUMENT saying what to do, where
the transport could only say RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import logging

from agentmesh.kit.config import Settings
from agentmesh.kit.logs import configure_logging
from agentmesh.kit.server import ServiceHost
from agentmesh.kit.tracing import configure_tracing, shutdown_tracing
from memory.connection import create_redis, describe
from tool_registry.service import SERVICE, SchemaExporter, ToolRegistryServicer, register
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
    host = ServiceHost(settings, name=settings.service_name or "registry")
    redis = create_redis(settings.redis_url, client_name="agentmesh-registry")
    store = RegistryStore(redis)
    servicer = ToolRegistryServicer(store, schema_exporter=schema_exporter, draining=host.draining)
    host.add_service(SERVICE, register(servicer))

    async def close() -> None:
        await servicer.close()
        await redis.aclose()

    host.on_stop(close)
    log.info("registry store", extra={"redis": describe(settings.redis_url)})
    await host.run()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.service_name or "registry", settings.log_level, settings.log_format)
    configure_tracing(settings.service_name or "registry", trace_dir=settings.trace_dir)
    try:
        asyncio.run(serve(settings, schema_exporter=default_schema_exporter()))
    finally:
        shutdown_tracing()

"""Test helpers for the Tool Registry: a real servicer + store on a test Redis, served over gRPC."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agentmesh.kit.auth import MeshAuth
from agentmesh.kit.channels import create_channel
from agentmesh.kit.testing import local_settings, running_host
from agentmesh.v1 import tool_registry_service_pb2_grpc
from memory.connection import AnyRedis, create_redis
from tool_registry.server import registry_authenticator, registry_settings
from tool_registry.service import SERVICE, ToolRegistryServicer, register
from tool_registry.store import RegistryStore


@dataclass
class Registry:
    stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub
    servicer: ToolRegistryServicer
    store: RegistryStore
    redis: AnyRedis
    host: Any


@contextlib.asynccontextmanager
async def registry_at(
    url: str, *, auth: MeshAuth | None = None, **servicer_options: Any
) -> AsyncIterator[Registry]:
    """`auth`: verify callers as the registry process does (RULES, AUDIENCES); None: no authentication."""
    client = create_redis(url)  # as the server does: a cluster URL gives a cluster client
    store = RegistryStore(client)
    servicer = ToolRegistryServicer(store, **servicer_options)
    settings = registry_settings(local_settings())
    authenticator = registry_authenticator(auth) if auth is not None else None
    async with (
        running_host(
            [(SERVICE, register(servicer))], settings=settings, name="registry", authenticator=authenticator
        ) as (host, _),
        create_channel(f"127.0.0.1:{host.grpc_port}", settings=settings) as channel,  # 64 MiB, as the CLI
    ):
        servicer.draining = host.draining
        try:
            yield Registry(
                tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel), servicer, store, client, host
            )
        finally:
            await servicer.close()
            await client.aclose()


async def snapshot(client: AnyRedis) -> dict[bytes, bytes | None]:
    """Every key and its serialized value: equal snapshots mean an unchanged store."""
    return {key: await client.dump(key) for key in sorted(await client.keys("*"))}

"""Test helpers for services built on the kit (used by agentmesh's own tests too).

    async with running_host(register_fn, service_descriptor) as (host, channel):
        stub = MyServiceStub(channel)
        ...

starts a real grpc.aio server on a free loopback port with the full kit
(edge interceptor, health, reflection) and yields a connected channel.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from agentmesh.kit.auth.gate import Authenticator
from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import Settings
from agentmesh.kit.server import ServiceHost

Registration = tuple[ServiceDescriptor | str, Callable[[grpc.aio.Server], None]]


def local_settings(**overrides: Any) -> Settings:
    """Settings for an in-process test server: loopback, free ports, no drain waits.

    Authentication is on when a `signing_key` or `jwks` is given, else off
    (AGENTMESH_INSECURE_NO_AUTH), as a test of something else needs no tokens.
    """
    base: dict[str, Any] = {
        "grpc_port": 0,
        "http_port": 0,
        "health_port": 0,
        "bind_host": "127.0.0.1",
        "drain_grace_s": 0.5,
        "log_format": "text",
    }
    if "signing_key" not in overrides and "jwks" not in overrides:
        # No key to verify tokens with: development mode (callers name themselves in headers).
        base["insecure_no_auth"] = True
    base.update(overrides)
    return Settings.from_env({}, **base)


@contextlib.asynccontextmanager
async def running_host(
    registrations: Sequence[Registration],
    *,
    settings: Settings | None = None,
    name: str = "test",
    authenticator: Authenticator | None = None,
) -> AsyncIterator[tuple[ServiceHost, grpc.aio.Channel]]:
    host = ServiceHost(settings or local_settings(), name=name, authenticator=authenticator)
    for service, register in registrations:
        host.add_service(service, register)
    await host.start()
    channel = create_channel(f"127.0.0.1:{host.grpc_port}")
    try:
        yield host, channel
    finally:
        await channel.close()
        await host.stop(grace=0)

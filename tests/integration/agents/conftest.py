"""In-process parts for the agent's integration tests, all real: valkey (the harness's), the
registry, example tools served by the SDK and self-registered, the scripted model over HTTP,
and `AgentProcess` on port 0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from agentmesh.kit.testing import local_settings
from agentmesh.v1 import agent_service_pb2_grpc
from agents.model.script import load_script
from agents.scripted_model import ScriptedModelServer
from agents.server import AgentProcess
from agents.spec import DomainSpec, load_spec, parse_spec
from examples import crm, email, inventory, payments, shipping
from tests.support.auth import authorized_channel, issuer, key_path
from tests.support.registry import Registry, registry_at

ROOT = Path(__file__).resolve().parents[3]
DOMAINS = ROOT / "agents" / "domains"
FIXTURE_DOMAINS = ROOT / "tests" / "fixtures" / "domains"
E2E_SCRIPT = ROOT / "tests" / "fixtures" / "scripts" / "e2e.yaml"


@pytest.fixture
async def registry(redis_url: str) -> AsyncIterator[Registry]:
    async with registry_at(redis_url) as reg:
        yield reg


@pytest.fixture
async def example_tools(registry: Registry, redis_url: str) -> AsyncIterator[dict[str, Any]]:
    """The example tool services, self-registered in the registry; name -> ToolService (state inspectable)."""
    apps = {
        "crm": crm.build(),
        "payments": payments.build(),
        "email": email.build(),
        "inventory": inventory.build(),
        "shipping": shipping.build(),
    }
    client = redis_asyncio.Redis.from_url(redis_url)
    async with contextlib.AsyncExitStack() as stack:
        for name, app in apps.items():
            # Auth on, as the agents: the SDK verifies each call's tool token (and its approval claim).
            settings = local_settings(
                registry=f"127.0.0.1:{registry.host.grpc_port}",
                service_name=name,
                signing_key=key_path(),
                service_token=issuer().service_token(name),
            )
            await stack.enter_async_context(app.serving(settings, redis=client, register=True))
        for app in apps.values():
            assert app.registration is not None
            await asyncio.wait_for(app.registration.registered.wait(), 30)
        yield apps
    await client.aclose()


@pytest.fixture
async def model() -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer(load_script(E2E_SCRIPT)) as server:
        yield server


AgentFactory = Callable[..., contextlib.AbstractAsyncContextManager[tuple[AgentProcess, Any]]]


@pytest.fixture
def agent(registry: Registry, redis_url: str, model: ScriptedModelServer) -> AgentFactory:
    """`async with agent(spec) as (process, stub)`: an agent process on port 0.

    `spec`: a path, a mapping or a DomainSpec."""

    @contextlib.asynccontextmanager
    async def start(
        spec: Path | dict[str, Any] | DomainSpec, *, model_url: str | None = None, **settings: Any
    ) -> AsyncIterator[tuple[AgentProcess, Any]]:
        domain = (
            spec
            if isinstance(spec, DomainSpec)
            else (load_spec(spec) if isinstance(spec, Path) else parse_spec(spec))
        )
        options: dict[str, Any] = {
            "redis_url": redis_url,
            "registry": f"127.0.0.1:{registry.host.grpc_port}",
            "model_base_url": model_url or model.base_url,
            "model_name": "scripted",
            "signing_key": key_path(),
            **settings,
        }
        process = AgentProcess(local_settings(**options), domain)
        await process.start()
        # Calls carry the default test identity's token unless they send their own (`bearer(...)`).
        channel = authorized_channel(f"127.0.0.1:{process.host.grpc_port}")
        try:
            yield process, agent_service_pb2_grpc.AgentServiceStub(channel)
        finally:
            await channel.close()
            await process.stop(grace=0)

    return start

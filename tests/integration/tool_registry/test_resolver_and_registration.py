"""The resolver and the SDK's self-registration against a real registry (restarted on the same port)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.kit.channels import create_channel
from agentmesh.kit.errors import NotFound, Unavailable
from agentmesh.kit.net import free_port
from agentmesh.kit.server import ServiceHost
from agentmesh.kit.testing import local_settings
from agentmesh.v1 import tool_pb2, tool_registry_service_pb2_grpc
from agentmesh.v1 import tool_registry_service_pb2 as rs
from examples import crm
from tests.support.waiting import until
from tool_registry.invoke import CallContext, CallOutcome, ToolInvoker
from tool_registry.resolver import ToolResolver
from tool_registry.server import default_schema_exporter, registry_settings
from tool_registry.service import SERVICE, ToolRegistryServicer, register
from tool_registry.store import RegistryStore

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def registry_on(redis_url: str, port: int) -> AsyncIterator[ToolRegistryServicer]:
    client = redis_asyncio.Redis.from_url(redis_url)
    servicer = ToolRegistryServicer(RegistryStore(client), schema_exporter=default_schema_exporter())
    host = ServiceHost(registry_settings(local_settings(grpc_port=port)), name="registry")
    host.add_service(SERVICE, register(servicer))
    await host.start()
    servicer.draining = host.draining
    try:
        yield servicer
    finally:
        await host.stop(grace=0)
        await servicer.close()
        await client.aclose()


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, what: str = ""
) -> None:
    await until(
        check, what=what or getattr(check, "__name__", "the condition"), timeout=timeout, interval=0.05
    )


async def test_self_registration_resolution_watch_and_registry_outage(tmp_redis: Any) -> None:
    # A private valkey: this test flushes it, and must not depend on what other tests do to the shared one.
    redis_url = tmp_redis().url
    async with asyncio.timeout(120):  # fail with a traceback rather than hang the suite
        await _outage_story(redis_url)


async def _outage_story(redis_url: str) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    tools_redis = redis_asyncio.Redis.from_url(redis_url)
    app = crm.build()
    async with contextlib.AsyncExitStack() as stack:
        # The tool starts first: the registry is not there yet, which must not stop it serving.
        host = await stack.enter_async_context(
            app.serving(local_settings(registry=target), redis=tools_redis)
        )
        assert app.registration is not None
        await asyncio.sleep(0.3)
        assert not app.registration.registered.is_set()
        assert "pending" in (await app.registration.report())["tools"]["crm_get_order"]

        registry = await stack.enter_async_context(contextlib.AsyncExitStack())
        await registry.enter_async_context(registry_on(redis_url, port))
        await asyncio.wait_for(app.registration.registered.wait(), 15)
        assert set((await app.registration.report())["tools"].values()) == {"registered"}

        channel = await stack.enter_async_context(create_channel(target, control_plane=True))
        resolver = await stack.enter_async_context(ToolResolver(channel))
        await asyncio.wait_for(resolver.connected.wait(), 10)
        assert resolver.registry_reachable

        tool = await resolver.resolve("crm_get_order", "^1")
        assert tool.endpoint == f"localhost:{host.grpc_port}" and tool.version == "1.0.0"
        assert json.loads(tool.spec.input_schema_json)["properties"]["order_id"]["pattern"]
        assert await resolver.resolve("crm_get_order", "^1") is tool  # cached
        result = await ToolInvoker().invoke(
            tool, {"order_id": "ORD-12345"}, CallContext(deadline=time.time() + 5)
        )
        assert result.outcome is CallOutcome.OK and result.response["total_cents"] == "4900"
        with pytest.raises(NotFound):
            await resolver.resolve("crm_nope")

        # A change in the registry reaches the cache through WatchTools.
        stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
        await stub.BindToolEndpoint(
            rs.BindToolEndpointRequest(name="crm_get_order", version="1.0.0", endpoint="elsewhere:1")
        )
        await eventually(lambda: ("crm_get_order", "^1") not in resolver._answers)
        assert (await resolver.resolve("crm_get_order", "^1")).endpoint == "elsewhere:1"

        # Registry outage: the cache keeps serving, and says so.
        rounds = app.registration.rounds
        await registry.aclose()
        await eventually(lambda: not resolver.registry_reachable)
        assert (await resolver.resolve("crm_get_order", "^1")).endpoint == "elsewhere:1"
        with pytest.raises(Unavailable):
            await resolver.resolve("crm_list_orders", "latest")

        # The registry comes back with an empty store: the tool registers itself again (and
        # rebinds its endpoint), the resolver reconnects and resynchronises.
        await tools_redis.flushall()
        await stack.enter_async_context(registry_on(redis_url, port))
        await eventually(lambda: app.registration.rounds > rounds and app.registration.registered.is_set())
        await eventually(lambda: resolver.registry_reachable)

        async def rebound() -> bool:
            try:
                found = await resolver.resolve("crm_get_order", "^1")
            except (NotFound, Unavailable):
                return False
            return found.endpoint == f"localhost:{host.grpc_port}"

        await eventually(rebound)
        listed = await stub.ListTools(rs.ListToolsRequest())
        assert {t.name for t in listed.tools} == {
            "crm_get_customer",
            "crm_get_order",
            "crm_list_orders",
            "crm_get_ticket",
        }
    await tools_redis.aclose()


async def test_registration_refusal_is_reported_not_fatal(redis_url: str) -> None:
    port = free_port()
    async with registry_on(redis_url, port):
        channel = create_channel(f"127.0.0.1:{port}", control_plane=True)
        stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
        # Someone registered crm_get_order 1.0.0 with other content first.
        other = crm.build()
        schema = other.methods["GetOrder"].schema
        first = tool_pb2.ToolSpec(
            file_descriptor_set=other.file_set_bytes, method=schema.method_name, description="x"
        )
        await stub.RegisterTool(rs.RegisterToolRequest(tool=first))
        tools_redis = redis_asyncio.Redis.from_url(redis_url)
        app = crm.build()
        async with app.serving(local_settings(registry=f"127.0.0.1:{port}"), redis=tools_redis) as host:
            assert app.registration is not None
            await eventually(lambda: app.registration is not None and app.registration.rounds >= 1)
            registration = app.registration
            await eventually(
                lambda: registration.state["crm_get_order"].startswith("refused: ALREADY_EXISTS")
            )
            assert registration.state["crm_get_customer"] == "registered"
            health = create_channel(f"127.0.0.1:{host.grpc_port}")
            status = await health_pb2_grpc.HealthStub(health).Check(
                health_pb2.HealthCheckRequest(service="crm.v1.Crm")
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            await health.close()
        await tools_redis.aclose()
        await channel.close()

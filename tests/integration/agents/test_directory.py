"""Registering the agent card in the real registry's directory (the mesh's phone book)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from agentmesh.kit.channels import create_channel
from agentmesh.kit.net import free_port
from agentmesh.kit.testing import local_settings, running_host
from agentmesh.v1 import agent_service_pb2, tool_pb2, tool_registry_service_pb2
from agents.card import build_card
from agents.directory import keep_registered, register_card
from agents.spec import load_spec
from tests.support.registry import Registry
from tool_registry.service import SERVICE, ToolRegistryServicer, register
from tool_registry.store import RegistryStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
SPEC = load_spec(ROOT / "agents" / "domains" / "fulfillment.yaml")


def card(endpoint: str = "127.0.0.1:50062") -> agent_service_pb2.AgentCard:
    return build_card(SPEC, endpoint=endpoint, http_url="http://127.0.0.1:51062", model="scripted:demo")


async def test_card_becomes_a_directory_entry_and_a_virtual_tool(registry: Registry) -> None:
    async with create_channel(f"127.0.0.1:{registry.host.grpc_port}") as channel:
        stored = await register_card(channel, card())
    assert stored.revision > 0
    found = await registry.stub.GetAgent(tool_registry_service_pb2.GetAgentRequest(domain="fulfillment"))
    assert found.endpoint == "127.0.0.1:50062" and [t.name for t in found.tools] == list(SPEC.tool_names)
    tool = await registry.stub.GetTool(tool_registry_service_pb2.GetToolRequest(name="agent_fulfillment"))
    assert tool.kind == tool_pb2.TOOL_KIND_AGENT and tool.endpoint == "127.0.0.1:50062"
    assert tool.method == "agentmesh.v1.AgentService/Run" and tool.timeout.seconds == 120


async def test_registration_waits_for_a_registry_that_starts_later(redis_url: str) -> None:
    port = free_port()
    registered = asyncio.Event()
    async with create_channel(f"127.0.0.1:{port}") as channel:
        task = asyncio.create_task(keep_registered(channel, card(), registered))
        await asyncio.sleep(0.5)
        assert not registered.is_set() and not task.done()
        client = redis_asyncio.Redis.from_url(redis_url)
        servicer = ToolRegistryServicer(RegistryStore(client))
        settings = local_settings(grpc_port=port)
        try:
            async with running_host([(SERVICE, register(servicer))], settings=settings, name="registry"):
                await asyncio.wait_for(registered.wait(), 30)
                await task
        finally:
            await servicer.close()
            await client.aclose()


async def test_a_refused_card_is_logged_not_retried_forever(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    registered = asyncio.Event()
    async with create_channel(f"127.0.0.1:{registry.host.grpc_port}") as channel:
        await asyncio.wait_for(keep_registered(channel, card(endpoint="not a target!"), registered), 10)
    assert not registered.is_set()
    assert "refused the agent card" in caplog.text

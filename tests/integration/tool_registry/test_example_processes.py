"""Example tools as real processes through the container entrypoint (`agentmesh serve tool`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from agentmesh.kit.channels import create_channel
from agentmesh.kit.net import free_port_with_partner
from agentmesh.localmesh.proc import ServiceProcess
from agentmesh.v1 import tool_pb2
from examples._common import load
from tool_registry.invoke import CallContext, CallOutcome, ResolvedTool, ToolInvoker
from tool_registry.registration import prepare

pytestmark = pytest.mark.integration


async def test_agentmesh_serve_tool_runs_an_example(
    service_process: Callable[..., ServiceProcess], redis_url: str
) -> None:
    port = free_port_with_partner(1000)
    process = service_process(
        "dummy",
        [sys.executable, "-m", "agentmesh", "serve", "tool"],
        port,
        env={
            "AGENTMESH_TOOL": "dummy",
            "AGENTMESH_GRPC_PORT": str(port),
            "REDIS_URL": redis_url,
            "AGENTMESH_LOG_FORMAT": "text",
            "AGENTMESH_INSECURE_NO_AUTH": "true",
        },
        health_service="dummy.v1.Dummy",
    )
    await process.wait_serving(60)
    app = load("dummy")
    endpoint = f"127.0.0.1:{port}"
    async with create_channel(endpoint) as channel:

        def tool(method: str) -> ResolvedTool:
            schema = app.methods[method].schema
            spec = prepare(
                tool_pb2.ToolSpec(
                    file_descriptor_set=app.file_set_bytes, method=schema.method_name, endpoint=endpoint
                )
            ).spec
            return ResolvedTool(spec, schema, channel)

        invoker = ToolInvoker()
        call: Any = CallContext(task_id="proc", step=1, deadline=time.time() + 10)
        first = await invoker.invoke(tool("Act"), {"action": "x"}, call)
        again = await invoker.invoke(tool("Act"), {"action": "x"}, call)
        stats = await invoker.invoke(tool("Stats"), {}, CallContext(deadline=time.time() + 10))
    assert first.outcome is CallOutcome.OK and again.outcome is CallOutcome.DEDUPLICATED
    assert stats.response is not None and stats.response["effects"] == "1" and stats.response["calls"] == "1"
    assert stats.response["effects_by_action"] == {"x": "1"}

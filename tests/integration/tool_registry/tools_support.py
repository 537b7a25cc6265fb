"""Serve example tools on port 0 with the SDK and make ResolvedTools for them (no registry)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import redis.asyncio as redis_asyncio

from agentmesh.kit.channels import create_channel
from agentmesh.kit.testing import local_settings
from agentmesh.v1 import tool_pb2
from tool_registry.invoke import ResolvedTool
from tool_registry.registration import prepare
from tool_registry.sdk import ToolService


class Served:
    def __init__(self, app: ToolService, port: int, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.port = port
        self.channel = channel
        self.endpoint = f"127.0.0.1:{port}"

    @property
    def state(self) -> Any:
        return self.app.state  # type: ignore[attr-defined]

    def tool(self, method: str, **overrides: Any) -> ResolvedTool:
        schema = self.app.methods[method].schema
        spec = prepare(
            tool_pb2.ToolSpec(
                file_descriptor_set=self.app.file_set_bytes, method=schema.method_name, endpoint=self.endpoint
            )
        ).spec
        for name, value in overrides.items():
            if name == "timeout_s":
                spec.timeout.FromNanoseconds(int(value * 1e9))
            elif name == "max_attempts":
                spec.retry.max_attempts = value
            else:
                setattr(spec, name, value)
        return ResolvedTool(spec, schema, self.channel)


@contextlib.asynccontextmanager
async def served(app: ToolService, redis_url: str, **settings: Any) -> AsyncIterator[Served]:
    client = redis_asyncio.Redis.from_url(redis_url)
    async with app.serving(local_settings(**settings), redis=client, register=False) as host:
        assert host.grpc_port
        channel = create_channel(f"127.0.0.1:{host.grpc_port}")
        try:
            yield Served(app, host.grpc_port, channel)
        finally:
            await channel.close()
    await client.aclose()

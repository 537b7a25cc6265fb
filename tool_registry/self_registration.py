"""A tool process's self-registration with the registry (the tool SDK's second half).

`Registration` keeps a process's tools registered with their endpoint for as long as it
serves: in the background, retried with backoff while the registry is unreachable, renewed
when the WatchTools stream breaks (a registry restart) and every `refresh_s`. Never a crash;
the state is in logs, `report()` (the SDK's /registration on the HTTP listener) and the
agentmesh_tool_registered metric. `tool_registry/sdk.py` serves the methods and starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from agentmesh.kit import metadata as md
from agentmesh.kit import metrics
from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import Settings
from agentmesh.kit.errors import from_rpc_error
from agentmesh.kit.retry import Backoff, Reconnect
from agentmesh.v1 import tool_pb2, tool_registry_service_pb2, tool_registry_service_pb2_grpc
from tool_registry.descriptors import ToolSchema

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 60.0
# What a registration sends as metadata (the service token), asked for at every call.
MetadataProvider = Callable[[], Sequence[tuple[str, str]]]


def service_token_metadata(settings: Settings) -> MetadataProvider:
    """What a tool sends to the registry by default: AGENTMESH_SERVICE_TOKEN as a Bearer token."""
    token = settings.service_token

    def provide() -> Sequence[tuple[str, str]]:
        return [(md.AUTHORIZATION, f"Bearer {token}")] if token else []

    return provide


@dataclass
class Registration:
    """Keeps this process's tools registered, with its endpoint, for as long as it serves."""

    tools: list[ToolSchema]
    file_set: bytes
    registry: str
    endpoint: str
    settings: Settings | None = None
    metadata: MetadataProvider | None = None
    refresh_s: float = REFRESH_INTERVAL_S
    state: dict[str, str] = field(default_factory=dict)
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    # Completed registration rounds (the registry answered for every tool): a round that
    # fails half-way does not count, so "rounds went up" means "all registered again".
    rounds: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        for schema in self.tools:
            self.state[self._name(schema)] = "pending"
            metrics.TOOL_REGISTERED.labels(self._name(schema)).set(0)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def report(self) -> dict[str, Any]:
        return {"registry": self.registry, "endpoint": self.endpoint, "tools": dict(self.state)}

    @staticmethod
    def _name(schema: ToolSchema) -> str:
        options = schema.options()
        return options.name if options is not None and options.name else schema.method_name

    async def _run(self) -> None:
        reconnect = Reconnect(Backoff(initial_s=0.2, max_s=10.0))
        channel = create_channel(self.registry, settings=self.settings, control_plane=True)
        stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
        try:
            while True:
                try:
                    revision = await self.register_all(stub)
                    reconnect.reset()
                    await self._watch(stub, revision)
                    delay = reconnect.next_delay()  # the watch ended: register again
                except grpc.aio.AioRpcError as exc:
                    error = from_rpc_error(exc)
                    delay = reconnect.next_delay()
                    log.warning(
                        "registry unreachable; tools not (re)registered yet",
                        extra={"registry": self.registry, "code": error.code.name, "retry_in_s": delay},
                    )
                    for name in self.state:
                        if self.state[name] != "registered":
                            self.state[name] = f"pending: registry {error.code.name}"
                await asyncio.sleep(delay)
        finally:
            await channel.close()

    async def register_all(self, stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub) -> int:
        """Register every tool (idempotent: UNCHANGED, or REBOUND to this endpoint); the registry revision."""
        for schema in self.tools:
            name = self._name(schema)
            request = tool_registry_service_pb2.RegisterToolRequest(
                tool=tool_pb2.ToolSpec(
                    file_descriptor_set=self.file_set, method=schema.method_name, endpoint=self.endpoint
                )
            )
            try:
                response = await stub.RegisterTool(request, metadata=self._metadata(), timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                error = from_rpc_error(exc)
                # A refusal (version taken with other content, breaking change, bad schema) will not
                # change by retrying soon: report it loudly and keep serving.
                self.state[name] = f"refused: {error.code.name} {error.message}"[:500]
                log.error(
                    "the registry refused a tool",
                    extra={"tool": name, "code": error.code.name, "error": error.message},
                )
                metrics.TOOL_REGISTERED.labels(name).set(0)
                continue
            outcome = tool_registry_service_pb2.RegistrationOutcome.Name(response.outcome)
            self.state[name] = "registered"
            metrics.TOOL_REGISTERED.labels(name).set(1)
            log.info(
                "tool registered",
                extra={
                    "tool": name,
                    "version": response.tool.version,
                    "endpoint": self.endpoint,
                    "outcome": outcome,
                },
            )
        self.rounds += 1
        if all(state == "registered" for state in self.state.values()):
            self.registered.set()
        listing = await stub.ListTools(
            tool_registry_service_pb2.ListToolsRequest(page_size=1), metadata=self._metadata(), timeout=10
        )
        return int(listing.revision)

    async def _watch(
        self, stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub, revision: int
    ) -> None:
        """Follow the change stream until it breaks (a registry restart: register again) or refresh is due."""
        names = [self._name(schema) for schema in self.tools]
        stream = stub.WatchTools(
            tool_registry_service_pb2.WatchToolsRequest(after_revision=revision, names=names),
            metadata=self._metadata(),
        )
        refresh_at = time.monotonic() + self.refresh_s
        try:
            while True:
                left = refresh_at - time.monotonic()
                if left <= 0:
                    return
                try:
                    change = await asyncio.wait_for(stream.read(), left)
                except TimeoutError:
                    return
                if change is grpc.aio.EOF:
                    log.info("registry watch ended; registering again", extra={"registry": self.registry})
                    return
        finally:
            stream.cancel()

    def _metadata(self) -> Sequence[tuple[str, str]]:
        return list(self.metadata()) if self.metadata is not None else []

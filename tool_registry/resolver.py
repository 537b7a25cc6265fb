"""ToolResolver: tool name + version range -> a callable tool, cached and kept current.

    resolver = ToolResolver(create_channel(settings.registry, control_plane=True), settings=settings)
    await resolver.start()                       # opens the watch
    tool = await resolver.resolve("payments_refund", "^1")   # ResolvedTool for ToolInvoker
    resolver.registry_reachable                  # for the agent's readiness / health

- GetTool answers are cached per (name, version query); schemas (descriptor
  pool, message classes, protovalidate validator, argument converter) per
  (name, version, content digest), since versions are immutable.
- One pooled channel per endpoint (agentmesh.kit.channels.create_channel, no
  transparent retry: the invoker decides), shared by every tool served there.
- WatchTools keeps the cache current: any change of a tool (new version,
  deprecation, endpoint rebind) drops that tool's cached answers, so the next
  resolve asks again; the watch resumes from the last revision after a
  disconnect, and RESYNC_REQUIRED drops every cached answer.
- While the registry is unreachable the cache keeps serving (a miss is
  UNAVAILABLE), `registry_reachable` is False and
  agentmesh_registry_reachable is 0; the watch reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from agentmesh.kit import metrics
from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import Settings
from agentmesh.kit.errors import AgentmeshError, Unavailable, from_rpc_error
from agentmesh.kit.retry import Backoff, Reconnect
from agentmesh.v1 import errors_pb2, tool_pb2, tool_registry_service_pb2, tool_registry_service_pb2_grpc
from tool_registry.agent_tool import agent_schema
from tool_registry.descriptors import ToolSchema, load_tool_schema
from tool_registry.invoke import ResolvedTool

log = logging.getLogger(__name__)

rs = tool_registry_service_pb2
GET_TIMEOUT_S = 5.0
# Tool endpoints come back quickly after a restart: reconnect sooner than gRPC's default (1 s .. 120 s).
TOOL_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
]
MetadataProvider = Callable[[], Sequence[tuple[str, str]]]


class ToolResolver:
    def __init__(
        self,
        registry_channel: grpc.aio.Channel,
        *,
        settings: Settings | None = None,
        metadata: MetadataProvider | None = None,
        channel_factory: Callable[[str], grpc.aio.Channel] | None = None,
    ) -> None:
        self._stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(registry_channel)
        self._settings = settings
        self._metadata = metadata
        self._channel_factory = channel_factory or self._default_channel
        self._answers: dict[tuple[str, str], ResolvedTool] = {}
        self._schemas: dict[tuple[str, str, str], ToolSchema] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._generation: dict[str, int] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[ResolvedTool]] = {}
        self._watch: asyncio.Task[None] | None = None
        self._reachable = False
        self.revision = 0
        self.changes_seen = 0
        self.connected = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start following the registry's change stream (in the background; never fails)."""
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._follow())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def __aenter__(self) -> ToolResolver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def registry_reachable(self) -> bool:
        return self._reachable

    def cached(self) -> list[tool_pb2.ToolSpec]:
        return [tool.spec for tool in self._answers.values()]

    # -- resolving --------------------------------------------------------------------

    async def resolve(self, name: str, version: str = "latest") -> ResolvedTool:
        """The tool for `name` and a version (exact, `latest`, or a range like `^1.2`).

        NOT_FOUND / INVALID_ARGUMENT from the registry are raised as typed errors;
        an unreachable registry with nothing cached raises UNAVAILABLE.
        """
        key = (name, version or "latest")
        cached = self._answers.get(key)
        if cached is not None:
            return cached
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(key))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _fetch(self, key: tuple[str, str]) -> ResolvedTool:
        name, version = key
        generation = self._generation.get(name, 0)
        try:
            spec = await self._stub.GetTool(
                rs.GetToolRequest(name=name, version=version, view=tool_pb2.TOOL_VIEW_FULL),
                timeout=GET_TIMEOUT_S,
                metadata=self._call_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            error: AgentmeshError = from_rpc_error(exc)
            if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._set_reachable(False)
                error = Unavailable(
                    f"the tool registry is unreachable and {name} {version} is not cached",
                    reason=errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE,
                    metadata={"tool": name},
                )
            raise error from None
        tool = ResolvedTool(spec, self._schema(spec), self._channel(spec.endpoint) if spec.endpoint else None)
        if self._generation.get(name, 0) == generation:  # no change arrived meanwhile
            self._answers[key] = tool
            metrics.RESOLVER_CACHED_TOOLS.set(len(self._answers))
        return tool

    def _schema(self, spec: tool_pb2.ToolSpec) -> ToolSchema:
        key = (spec.name, spec.version, spec.content_digest)
        schema = self._schemas.get(key)
        if schema is None:
            data = spec.file_descriptor_set
            if not data and spec.kind == tool_pb2.TOOL_KIND_AGENT:
                schema = load_tool_schema(agent_schema(), spec.method)
            else:
                schema = load_tool_schema(data, spec.method)
            self._schemas[key] = schema
        return schema

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channel_factory(endpoint)
            self._channels[endpoint] = channel
        return channel

    def _default_channel(self, endpoint: str) -> grpc.aio.Channel:
        return create_channel(endpoint, settings=self._settings, extra_options=TOOL_CHANNEL_OPTIONS)

    def invalidate(self, name: str | None = None) -> None:
        """Drop cached answers for one tool (or all): the next resolve asks the registry."""
        if name is None:
            names = {n for n, _ in self._answers} | set(self._generation)
            self._answers.clear()
        else:
            names = {name}
            for key in [k for k in self._answers if k[0] == name]:
                del self._answers[key]
        for changed in names:
            self._generation[changed] = self._generation.get(changed, 0) + 1
        metrics.RESOLVER_CACHED_TOOLS.set(len(self._answers))

    # -- the watch --------------------------------------------------------------------

    async def _follow(self) -> None:
        reconnect = Reconnect(Backoff(initial_s=0.2, max_s=5.0))
        while True:
            try:
                await self._watch_once()
                reconnect.reset()
                delay = reconnect.next_delay()  # a drained replica: resume on another at once
            except grpc.aio.AioRpcError as exc:
                self._set_reachable(False)
                delay = reconnect.next_delay()
                log.warning(
                    "registry watch lost; serving tools from cache",
                    extra={"code": exc.code().name, "retry_in_s": round(delay, 2), "revision": self.revision},
                )
            await asyncio.sleep(delay)

    async def _watch_once(self) -> None:
        # A cheap read proves the registry answers (a watch stream sends nothing until a change).
        listing = await self._stub.ListTools(
            rs.ListToolsRequest(page_size=1), timeout=GET_TIMEOUT_S, metadata=self._call_metadata()
        )
        if not self.revision:
            self.revision = listing.revision
            self.invalidate()  # whatever was cached predates this listing
        stream = self._stub.WatchTools(
            rs.WatchToolsRequest(after_revision=self.revision), metadata=self._call_metadata()
        )
        self._set_reachable(True)
        try:
            while True:
                change = await stream.read()
                if change is grpc.aio.EOF:
                    return  # the registry replica is draining: resume on another
                self._apply(change)
        finally:
            stream.cancel()

    def _apply(self, change: tool_pb2.ToolChange) -> None:
        if change.kind == tool_pb2.CHANGE_KIND_PROGRESS:  # nothing changed up to its revision
            self.revision = max(self.revision, change.revision)
            return
        self.changes_seen += 1
        if change.kind == tool_pb2.CHANGE_KIND_RESYNC_REQUIRED:
            self.invalidate()
        elif change.tool_name:
            self.invalidate(change.tool_name)
        self.revision = max(self.revision, change.revision)

    def _set_reachable(self, reachable: bool) -> None:
        if reachable != self._reachable:
            log.info("tool registry %s", "reachable" if reachable else "unreachable")
        self._reachable = reachable
        metrics.REGISTRY_REACHABLE.set(1 if reachable else 0)
        if reachable:
            self.connected.set()
        else:
            self.connected.clear()

    def _call_metadata(self) -> Sequence[tuple[str, str]]:
        return list(self._metadata()) if self._metadata is not None else []

"""Turn Service events into registry writes: register, rebind, unbind, deprecate.

The reconciler keeps, per Service, what it registered (`ServiceState`). Every
action is idempotent (RegisterTool of an identical version answers UNCHANGED;
binding the same endpoint again changes nothing), so a restart, a relist or a
duplicate event is harmless. A Service is registered **all or nothing**: its
descriptors are fetched through gRPC reflection, every tool method is checked
with `validate_only` first, and only when all pass are they stored — a
malformed annotation, an unreachable port, a Service without tool methods or a
tool name owned by another service is reported (log, metric, an Event on the
Service when RBAC allows, `status()`), never half-registered, and retried with
backoff while the Service stays (its fix may be a new image, not a new object).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from google.protobuf import descriptor_pb2

from agentmesh.kit import metrics
from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import Settings
from agentmesh.kit.errors import AgentmeshError, from_rpc_error
from agentmesh.kit.retry import Backoff
from agentmesh.v1 import tool_pb2
from agentmesh.v1 import tool_registry_service_pb2 as rs
from agentmesh.v1 import tool_registry_service_pb2_grpc as rs_grpc
from tool_registry.descriptors import tool_methods
from tool_registry.discovery.annotations import AnnotationError, LabelledService, object_key, parse_service
from tool_registry.reflection_client import fetch_descriptor_set

log = logging.getLogger(__name__)

Metadata = list[tuple[str, str]]
# (the Service object, a short reason, the message): how a refusal reaches the cluster's users.
Reporter = Callable[[dict[str, Any], str, str], Awaitable[None]]


class DiscoveryRefused(Exception):
    """This Service cannot be registered as it is; `reason` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ServiceState:
    """What the reconciler knows about one Service."""

    key: str
    target: LabelledService | None = None
    tools: list[tuple[str, str]] = field(default_factory=list)  # (name, version) registered
    status: str = "pending"  # registered | failed | pending
    message: str = ""
    failures: int = 0
    obj: dict[str, Any] = field(default_factory=dict)
    retry: asyncio.TimerHandle | None = None

    def view(self) -> dict[str, Any]:
        return {
            "service": self.key,
            "status": self.status,
            "message": self.message,
            "endpoint": self.target.endpoint if self.target else None,
            "tools": [f"{name}@{version}" for name, version in self.tools],
        }


class Reconciler:
    def __init__(
        self,
        registry: rs_grpc.ToolRegistryServiceStub,
        *,
        metadata: Metadata,
        cluster_domain: str = "cluster.local",
        reflection_timeout_s: float = 10.0,
        settings: Settings | None = None,
        report: Reporter | None = None,
        retry_initial_s: float = 2.0,
        retry_max_s: float = 300.0,
    ) -> None:
        self.registry = registry
        self.metadata = metadata
        self.cluster_domain = cluster_domain
        self.reflection_timeout_s = reflection_timeout_s
        self.settings = settings
        self.report = report
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.services: dict[str, ServiceState] = {}
        self._lock = asyncio.Lock()
        # Notified after every reconciliation, so waiters (tests, status) need no polling.
        self.changed = asyncio.Condition()

    # -- events ------------------------------------------------------------------------

    async def snapshot(self, items: list[dict[str, Any]]) -> None:
        """A full list: retire every known Service that is not in it, apply every item."""
        present = {object_key(item): item for item in items}
        for key in [k for k in self.services if k not in present]:
            await self.removed(self.services[key].obj or {"metadata": _meta_of(key)})
        for item in present.values():
            await self.applied(item)

    async def applied(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        async with self._lock:
            state = self.services.setdefault(key, ServiceState(key))
            state.obj = obj
            await self._apply(state)
        await self._notify()

    async def removed(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        async with self._lock:
            state = self.services.get(key)
            if state is not None:
                if state.retry is not None:
                    state.retry.cancel()
                await self._retire(state)
                # Only now: `status()` reads without the lock, and a Service it no longer lists
                # must have its tools retired already.
                self.services.pop(key, None)
                self._set_gauges()
        await self._notify()

    def status(self) -> list[dict[str, Any]]:
        return [state.view() for state in sorted(self.services.values(), key=lambda s: s.key)]

    async def resync(self) -> None:
        """Register every known Service again: a new image may serve new tool versions."""
        for key in list(self.services):
            state = self.services.get(key)
            if state is not None and state.status == "registered":
                state.status = "pending"
                await self.applied(state.obj)

    def close(self) -> None:
        for state in self.services.values():
            if state.retry is not None:
                state.retry.cancel()

    # -- applying ----------------------------------------------------------------------

    async def _apply(self, state: ServiceState) -> None:
        if state.retry is not None:
            state.retry.cancel()
            state.retry = None
        try:
            target = parse_service(state.obj, cluster_domain=self.cluster_domain)
        except AnnotationError as exc:
            # Not retried: the object itself must change, and a change is a new event.
            await self._fail(state, "annotations", str(exc), retry=False)
            return
        if state.status == "registered" and state.target == _same_version(target, state.target):
            return  # a duplicate event or a relist: nothing changed
        try:
            tools = await self._register(target)
        except DiscoveryRefused as exc:
            await self._fail(state, exc.reason, str(exc), retry=True)
            return
        for name, version in [tool for tool in state.tools if tool not in tools]:
            await self._unbind(name, version)
        state.target, state.tools = target, tools
        state.status, state.message, state.failures = "registered", "", 0
        metrics.DISCOVERY_REGISTRATIONS.inc(len(tools))
        log.info(
            "discovered %s: %d tools at %s",
            state.key,
            len(tools),
            target.endpoint,
            extra={"service": state.key, "tools": [name for name, _ in tools]},
        )
        self._set_gauges()

    async def _register(self, target: LabelledService) -> list[tuple[str, str]]:
        fds = await self._descriptors(target)
        methods = [m for m in tool_methods(fds) if target.wants(m)]
        if not methods:
            under = f" under {', '.join(target.method_prefixes)}" if target.method_prefixes else ""
            raise DiscoveryRefused(
                "no_tools", f"no method of {target.endpoint} carries the agentmesh.v1.tool option{under}"
            )
        data = fds.SerializeToString()
        specs = [
            tool_pb2.ToolSpec(file_descriptor_set=data, method=m, endpoint=target.endpoint) for m in methods
        ]
        # All or nothing: every method must pass before any is stored.
        for spec in specs:
            await self._write(
                self.registry.RegisterTool, rs.RegisterToolRequest(tool=spec, validate_only=True)
            )
        registered = []
        for spec in specs:
            response = await self._write(self.registry.RegisterTool, rs.RegisterToolRequest(tool=spec))
            registered.append((response.tool.name, response.tool.version))
        return registered

    async def _descriptors(self, target: LabelledService) -> descriptor_pb2.FileDescriptorSet:
        channel = create_channel(target.endpoint, settings=self.settings)
        try:
            fds, _ = await fetch_descriptor_set(channel, timeout=self.reflection_timeout_s)
        except AgentmeshError as exc:
            raise DiscoveryRefused("reflection", f"reflection at {target.endpoint} failed: {exc}") from None
        finally:
            await channel.close()
        return fds

    async def _write(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self.metadata, timeout=15)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            tool = request.tool.name or request.tool.method if hasattr(request, "tool") else request.name
            action = type(request).__name__.removesuffix("Request")
            raise DiscoveryRefused(
                "registry", f"the registry refused {action} of {tool}: {error.code.name} {error}"
            ) from None

    async def _unbind(self, name: str, version: str) -> None:
        await self._write(
            self.registry.BindToolEndpoint, rs.BindToolEndpointRequest(name=name, version=version)
        )

    async def _retire(self, state: ServiceState) -> None:
        if not state.tools:
            return
        retire = state.target.retire if state.target else "unbind"
        for name, version in state.tools:
            try:
                await self._unbind(name, version)
                if retire == "deprecate":
                    message = f"the Service {state.key} that served it was deleted"
                    await self._write(
                        self.registry.DeprecateTool,
                        rs.DeprecateToolRequest(name=name, version=version, message=message),
                    )
            except DiscoveryRefused as exc:
                metrics.DISCOVERY_ERRORS.labels("retire").inc()
                log.warning("could not retire %s@%s of %s: %s", name, version, state.key, exc)
        log.info("retired %s (%s): %d tools", state.key, retire, len(state.tools))
        self._set_gauges()

    # -- failures ----------------------------------------------------------------------

    async def _fail(self, state: ServiceState, reason: str, message: str, *, retry: bool) -> None:
        state.status, state.message = "failed", message
        state.failures += 1
        metrics.DISCOVERY_ERRORS.labels(reason).inc()
        log.warning(
            "cannot register the tools of %s: %s",
            state.key,
            message,
            extra={"service": state.key, "reason": reason},
        )
        if self.report is not None:
            try:
                await self.report(state.obj, reason, message)
            except Exception:  # reporting is best effort (RBAC may forbid Events)
                log.debug("could not report on %s", state.key, exc_info=True)
        if retry:
            delay = Backoff(initial_s=self.retry_initial_s, max_s=self.retry_max_s).delay(state.failures)
            loop = asyncio.get_running_loop()
            state.retry = loop.call_later(delay, lambda: loop.create_task(self._retry(state.key)))
        self._set_gauges()

    async def _retry(self, key: str) -> None:
        state = self.services.get(key)
        if state is not None and state.status == "failed":
            await self.applied(state.obj)

    def _set_gauges(self) -> None:
        counts = {"registered": 0, "failed": 0, "pending": 0}
        for state in self.services.values():
            counts[state.status] = counts.get(state.status, 0) + 1
        for status, count in counts.items():
            metrics.DISCOVERY_SERVICES.labels(status).set(count)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Until `predicate()` holds after a reconciliation; TimeoutError naming the state otherwise."""
        deadline = time.monotonic() + timeout
        async with self.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"discovery did not reach the expected state: {self.status()}")
                try:
                    await asyncio.wait_for(self.changed.wait(), remaining)
                except TimeoutError:
                    continue


def _same_version(target: LabelledService, previous: LabelledService | None) -> LabelledService | None:
    """`previous` as it compares with `target`: the resourceVersion alone does not make a change."""
    if previous is None:
        return None
    return replace(previous, resource_version=target.resource_version)


def _meta_of(key: str) -> dict[str, Any]:
    namespace, _, name = key.partition("/")
    return {"namespace": namespace, "name": name}

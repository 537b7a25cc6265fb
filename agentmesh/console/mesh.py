"""The console as a gRPC client of the registry and the agents, acting as the signed-in user.

Every call carries the user's own token (`authorization: Bearer <token>`), never a service
token: the services decide what the user may see, and the console shows exactly that.
Agents are found through the registry's directory (their cards' endpoints); one channel
per endpoint, shared by every user (the credentials travel per call, not per channel).

Until the agents verify tokens they take the caller from `x-agentmesh-tenant` /
`x-agentmesh-user`; the console sends those too, filled from the token it verified at
sign-in (never from anything the browser sends), so the same code is correct before
and after the switch. `identity_headers=False` drops them once every service verifies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import cast

import grpc

from agentmesh.kit import metadata as md
from agentmesh.kit.auth import Principal
from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import DEFAULT_REGISTRY, Settings
from agentmesh.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    task_pb2,
    tool_pb2,
    tool_registry_service_pb2,
    tool_registry_service_pb2_grpc,
)

CALL_TIMEOUT_S = 10.0
# The directory (domain -> endpoint) is cached this long: routing data, not user data.
DIRECTORY_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class Identity:
    """The signed-in user: the token the console forwards and what verifying it proved."""

    token: str
    principal: Principal

    @property
    def user(self) -> str:
        return self.principal.subject

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    def metadata(self, *, identity_headers: bool = True) -> tuple[tuple[str, str], ...]:
        items = [(md.AUTHORIZATION, f"Bearer {self.token}")]
        if identity_headers:
            items += [(md.TENANT, self.principal.tenant), (md.USER, self.principal.subject)]
        return tuple(items)


@dataclass
class _Directory:
    cards: list[agent_service_pb2.AgentCard] = field(default_factory=list)
    fetched_at: float = 0.0


class MeshClient:
    """Stubs for the registry and each agent; every method takes the caller's Identity."""

    def __init__(self, settings: Settings, *, identity_headers: bool = True) -> None:
        self.settings = settings
        self.identity_headers = identity_headers
        self._channels: dict[str, grpc.aio.Channel] = {}
        # A stub builds a callable per method: made once per endpoint, not per request.
        self._agent_stubs: dict[str, agent_service_pb2_grpc.AgentServiceStub] = {}
        self._registry_stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub | None = None
        self._directory = _Directory()
        self._directory_lock = asyncio.Lock()

    def _channel(self, target: str, *, control_plane: bool = False) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            # The registry's reads take the control-plane retry policy; agent calls do not (a
            # page answers at once with what it got, and CancelTask/ResumeTask are decisions).
            channel = create_channel(target, settings=self.settings, control_plane=control_plane)
            self._channels[target] = channel
        return channel

    def _md(self, who: Identity) -> tuple[tuple[str, str], ...]:
        return who.metadata(identity_headers=self.identity_headers)

    @property
    def registry_target(self) -> str:
        return self.settings.registry or DEFAULT_REGISTRY

    def registry(self) -> tool_registry_service_pb2_grpc.ToolRegistryServiceStub:
        if self._registry_stub is None:
            self._registry_stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(
                self._channel(self.registry_target, control_plane=True)
            )
        return self._registry_stub

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        self._agent_stubs, self._registry_stub = {}, None
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)

    # -- the directory ------------------------------------------------------------------------

    async def agents(self, who: Identity, *, fresh: bool = False) -> list[agent_service_pb2.AgentCard]:
        async with self._directory_lock:
            age = time.monotonic() - self._directory.fetched_at
            if fresh or age > DIRECTORY_TTL_S or not self._directory.cards:
                cards: list[agent_service_pb2.AgentCard] = []
                token = ""
                while True:
                    page = await self.registry().ListAgents(
                        tool_registry_service_pb2.ListAgentsRequest(page_size=100, page_token=token),
                        metadata=self._md(who),
                        timeout=CALL_TIMEOUT_S,
                    )
                    cards += page.agents
                    token = page.next_page_token
                    if not token:
                        break
                self._directory = _Directory(sorted(cards, key=lambda c: c.domain), time.monotonic())
            return list(self._directory.cards)

    async def agent(self, who: Identity, domain: str) -> agent_service_pb2_grpc.AgentServiceStub:
        for card in await self.agents(who):
            if card.domain == domain:
                stub = self._agent_stubs.get(card.endpoint)
                if stub is None:
                    stub = agent_service_pb2_grpc.AgentServiceStub(self._channel(card.endpoint))
                    self._agent_stubs[card.endpoint] = stub
                return stub
        raise LookupError(domain)

    # -- tools ----------------------------------------------------------------------------------

    async def list_tools(self, who: Identity) -> list[tool_pb2.ToolSpec]:
        tools: list[tool_pb2.ToolSpec] = []
        token = ""
        while True:
            page = await self.registry().ListTools(
                tool_registry_service_pb2.ListToolsRequest(
                    page_size=200,
                    page_token=token,
                    all_versions=True,
                    include_agents=True,
                    deprecated=tool_registry_service_pb2.DEPRECATION_FILTER_INCLUDE,
                    view=tool_pb2.TOOL_VIEW_BASIC,
                ),
                metadata=self._md(who),
                timeout=CALL_TIMEOUT_S,
            )
            tools += page.tools
            token = page.next_page_token
            if not token:
                return tools

    async def get_tool(self, who: Identity, name: str, version: str = "latest") -> tool_pb2.ToolSpec:
        result: tool_pb2.ToolSpec = await self.registry().GetTool(
            tool_registry_service_pb2.GetToolRequest(
                name=name, version=version, view=tool_pb2.TOOL_VIEW_FULL
            ),
            metadata=self._md(who),
            timeout=CALL_TIMEOUT_S,
        )
        return result

    async def check_compatibility(
        self, who: Identity, candidate: tool_pb2.ToolSpec, against: str
    ) -> tool_registry_service_pb2.CheckCompatibilityResponse:
        result: tool_registry_service_pb2.CheckCompatibilityResponse = (
            await self.registry().CheckCompatibility(
                tool_registry_service_pb2.CheckCompatibilityRequest(tool=candidate, against_version=against),
                metadata=self._md(who),
                timeout=CALL_TIMEOUT_S,
            )
        )
        return result

    # -- tasks ------------------------------------------------------------------------------------

    async def list_tasks(
        self,
        who: Identity,
        domain: str,
        *,
        states: Sequence[int] = (),
        session_id: str = "",
        page_size: int = 50,
        page_token: str = "",
        awaiting_approval: bool = False,
    ) -> agent_service_pb2.ListTasksResponse:
        stub = await self.agent(who, domain)
        request = agent_service_pb2.ListTasksRequest(
            page_size=page_size,
            page_token=page_token,
            states=cast(Sequence[task_pb2.TaskState.ValueType], states),
            session_id=session_id,
            view=task_pb2.TASK_VIEW_BASIC,
        )
        if awaiting_approval:
            request.filter = agent_service_pb2.TASK_FILTER_AWAITING_APPROVAL
        result: agent_service_pb2.ListTasksResponse = await stub.ListTasks(
            request, metadata=self._md(who), timeout=CALL_TIMEOUT_S
        )
        return result

    async def get_task(self, who: Identity, domain: str, task_id: str) -> task_pb2.Task:
        stub = await self.agent(who, domain)
        result: task_pb2.Task = await stub.GetTask(
            agent_service_pb2.GetTaskRequest(task_id=task_id, view=task_pb2.TASK_VIEW_FULL),
            metadata=self._md(who),
            timeout=CALL_TIMEOUT_S,
        )
        return result

    async def watch_task(
        self, who: Identity, domain: str, task_id: str, after_event_id: str = ""
    ) -> AsyncGenerator[task_pb2.TaskEvent, None]:
        stub = await self.agent(who, domain)
        call = stub.WatchTask(
            agent_service_pb2.WatchTaskRequest(task_id=task_id, after_event_id=after_event_id),
            metadata=self._md(who),
        )
        try:
            async for event in call:
                yield event
        finally:
            call.cancel()

    async def cancel_task(self, who: Identity, domain: str, task_id: str, reason: str) -> task_pb2.Task:
        stub = await self.agent(who, domain)
        result: task_pb2.Task = await stub.CancelTask(
            agent_service_pb2.CancelTaskRequest(task_id=task_id, reason=reason),
            metadata=self._md(who),
            timeout=CALL_TIMEOUT_S,
        )
        return result

    async def decide(
        self, who: Identity, domain: str, task_id: str, action_id: str, *, approve: bool, reason: str
    ) -> task_pb2.Task:
        stub = await self.agent(who, domain)
        result: task_pb2.Task = await stub.ResumeTask(
            agent_service_pb2.ResumeTaskRequest(
                task_id=task_id,
                action_id=action_id,
                decision=agent_service_pb2.ApprovalDecision(approve=approve, reason=reason),
            ),
            metadata=self._md(who),
            timeout=CALL_TIMEOUT_S,
        )
        return result

    async def usage(self, who: Identity, domain: str) -> agent_service_pb2.GetUsageResponse:
        stub = await self.agent(who, domain)
        result: agent_service_pb2.GetUsageResponse = await stub.GetUsage(
            agent_service_pb2.GetUsageRequest(), metadata=self._md(who), timeout=CALL_TIMEOUT_S
        )
        return result

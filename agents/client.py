"""`AgentClient`: a small typed client for AgentService over the generated stubs.

    async with await AgentClient.for_domain("fulfillment", registry="localhost:50051") as agent:
        task = await agent.run("Ship ORD-1 to 1 Main St", session_id="s-1", timeout=60)

Finds an agent by domain through the registry's directory (GetAgent → the
card's endpoint) or talks to a direct target. Failed calls raise the typed
`AgentmeshError` of their status (`agentmesh.kit.errors.from_rpc_error`), so
callers branch on codes and reasons, never on message text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import grpc

from agentmesh.kit import metadata as md
from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import Settings
from agentmesh.kit.errors import from_rpc_error
from agentmesh.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    task_pb2,
    tool_registry_service_pb2,
    tool_registry_service_pb2_grpc,
)
from agents.limits import duration

T = TypeVar("T")
Metadata = Sequence[tuple[str, str]]


async def _call(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


async def find_agent(
    domain: str,
    *,
    registry: str,
    settings: Settings | None = None,
    metadata: Metadata = (),
    timeout: float = 10,
) -> agent_service_pb2.AgentCard:
    """The domain's card from the registry's agent directory (NOT_FOUND when unknown)."""
    async with create_channel(registry, settings=settings, control_plane=True) as channel:
        stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
        request = tool_registry_service_pb2.GetAgentRequest(domain=domain)
        return await _call(lambda: stub.GetAgent(request, metadata=list(metadata), timeout=timeout))


async def list_agents(
    *, registry: str, settings: Settings | None = None, metadata: Metadata = (), timeout: float = 10
) -> list[agent_service_pb2.AgentCard]:
    """Every card in the registry's agent directory, ordered by domain (all pages)."""
    cards: list[agent_service_pb2.AgentCard] = []
    async with create_channel(registry, settings=settings, control_plane=True) as channel:
        stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
        token = ""
        while True:
            page = await _list_agents_page(stub, token, metadata, timeout)
            cards.extend(page.agents)
            token = page.next_page_token
            if not token:
                return cards


async def _list_agents_page(
    stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub,
    token: str,
    metadata: Metadata,
    timeout: float,
) -> tool_registry_service_pb2.ListAgentsResponse:
    request = tool_registry_service_pb2.ListAgentsRequest(page_size=1000, page_token=token)
    return await _call(lambda: stub.ListAgents(request, metadata=list(metadata), timeout=timeout))


def caller_metadata(
    *, token: str | None = None, tenant: str | None = None, user: str | None = None
) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if token:
        pairs.append((md.AUTHORIZATION, f"Bearer {token}"))
    if tenant:
        pairs.append((md.TENANT, tenant))
    if user:
        pairs.append((md.USER, user))
    return pairs


def limits(
    *,
    max_iterations: int = 0,
    token_cap: int = 0,
    max_tool_calls: int = 0,
    deadline: float | timedelta | None = None,
    max_cost_usd: float = 0.0,
) -> task_pb2.Limits:
    result = task_pb2.Limits(
        max_iterations=max_iterations,
        token_cap=token_cap,
        max_tool_calls=max_tool_calls,
        max_cost_usd=max_cost_usd,
    )
    if deadline:
        result.deadline.CopyFrom(duration(deadline))
    return result


class AgentClient:
    def __init__(self, channel: grpc.aio.Channel, *, target: str = "", metadata: Metadata = ()) -> None:
        self._channel = channel
        self._stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        self.target = target
        self.metadata = list(metadata)

    @classmethod
    def connect(
        cls, target: str, *, settings: Settings | None = None, metadata: Metadata = ()
    ) -> AgentClient:
        return cls(create_channel(target, settings=settings), target=target, metadata=metadata)

    @classmethod
    async def for_domain(
        cls, domain: str, *, registry: str, settings: Settings | None = None, metadata: Metadata = ()
    ) -> AgentClient:
        card = await find_agent(domain, registry=registry, settings=settings, metadata=metadata)
        return cls.connect(card.endpoint, settings=settings, metadata=metadata)

    def acting_as(self, metadata: Metadata) -> AgentClient:
        """The same agent (sharing this client's channel: close this one) called as someone else."""
        return AgentClient(self._channel, target=self.target, metadata=metadata)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(
        self,
        instruction: str,
        *,
        session_id: str = "",
        parts: Sequence[task_pb2.Part] = (),
        limits: task_pb2.Limits | None = None,
        request_id: str = "",
        labels: Mapping[str, str] | None = None,
        view: task_pb2.TaskView.ValueType = task_pb2.TASK_VIEW_FULL,
        timeout: float | None = 120.0,
    ) -> task_pb2.Task:
        """Run the agent; the task is COMPLETED, FAILED, or waiting (INPUT_REQUIRED / handed off)."""
        request = agent_service_pb2.RunRequest(
            instruction=instruction,
            parts=list(parts),
            session_id=session_id,
            request_id=request_id,
            labels=dict(labels or {}),
            view=view,
        )
        if limits is not None:
            request.limits.CopyFrom(limits)
        response: agent_service_pb2.RunResponse = await _call(
            lambda: self._stub.Run(request, metadata=self.metadata, timeout=timeout)
        )
        return response.task

    async def submit(
        self,
        instruction: str,
        *,
        request_id: str,
        session_id: str = "",
        parts: Sequence[task_pb2.Part] = (),
        limits: task_pb2.Limits | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> task_pb2.Task:
        """Queue a durable task (idempotent on `request_id`); it starts SUBMITTED."""
        request = agent_service_pb2.SubmitTaskRequest(
            instruction=instruction,
            parts=list(parts),
            session_id=session_id,
            request_id=request_id,
            labels=dict(labels or {}),
        )
        if limits is not None:
            request.limits.CopyFrom(limits)
        task: task_pb2.Task = await _call(
            lambda: self._stub.SubmitTask(request, metadata=self.metadata, timeout=timeout)
        )
        return task

    async def card(self, timeout: float = 10.0) -> agent_service_pb2.AgentCard:
        request = agent_service_pb2.GetAgentCardRequest()
        return await _call(lambda: self._stub.GetAgentCard(request, metadata=self.metadata, timeout=timeout))

    async def delete_session(self, session_id: str, timeout: float = 10.0) -> None:
        request = agent_service_pb2.DeleteSessionRequest(session_id=session_id)
        await _call(lambda: self._stub.DeleteSession(request, metadata=self.metadata, timeout=timeout))

    async def usage(self, session_id: str = "", timeout: float = 10.0) -> agent_service_pb2.GetUsageResponse:
        request = agent_service_pb2.GetUsageRequest(session_id=session_id)
        return await _call(lambda: self._stub.GetUsage(request, metadata=self.metadata, timeout=timeout))

    async def forget_user(
        self, user: str, *, validate_only: bool = False, timeout: float = 60.0
    ) -> agent_service_pb2.ForgetUserResponse:
        """Everything memory holds about `user` of the caller's tenant (needs `memory:admin`)."""
        request = agent_service_pb2.ForgetUserRequest(user=user, validate_only=validate_only)
        return await _call(lambda: self._stub.ForgetUser(request, metadata=self.metadata, timeout=timeout))

    async def get_task(
        self,
        task_id: str,
        *,
        view: task_pb2.TaskView.ValueType = task_pb2.TASK_VIEW_FULL,
        timeout: float = 10.0,
    ) -> task_pb2.Task:
        request = agent_service_pb2.GetTaskRequest(task_id=task_id, view=view)
        return await _call(lambda: self._stub.GetTask(request, metadata=self.metadata, timeout=timeout))

    async def list_tasks(
        self,
        *,
        states: Sequence[task_pb2.TaskState.ValueType] = (),
        session_id: str = "",
        awaiting_approval: bool = False,
        page_size: int = 0,
        page_token: str = "",
        view: task_pb2.TaskView.ValueType = task_pb2.TASK_VIEW_BASIC,
        timeout: float = 10.0,
    ) -> agent_service_pb2.ListTasksResponse:
        """One page of the caller's tasks (newest first), or of the tasks awaiting the caller's approval."""
        request = agent_service_pb2.ListTasksRequest(
            states=list(states),
            session_id=session_id,
            filter=(
                agent_service_pb2.TASK_FILTER_AWAITING_APPROVAL
                if awaiting_approval
                else agent_service_pb2.TASK_FILTER_UNSPECIFIED
            ),
            page_size=page_size,
            page_token=page_token,
            view=view,
        )
        return await _call(lambda: self._stub.ListTasks(request, metadata=self.metadata, timeout=timeout))

    async def cancel(self, task_id: str, *, reason: str = "", timeout: float = 10.0) -> task_pb2.Task:
        """Cancel a task (a running attempt stops at its next checkpoint); the task as it is then."""
        request = agent_service_pb2.CancelTaskRequest(task_id=task_id, reason=reason)
        task: task_pb2.Task = await _call(
            lambda: self._stub.CancelTask(request, metadata=self.metadata, timeout=timeout)
        )
        return task

    async def resume(
        self,
        task_id: str,
        action_id: str,
        *,
        approve: bool | None = None,
        reason: str = "",
        parts: Sequence[task_pb2.Part] = (),
        request_id: str = "",
        timeout: float = 10.0,
    ) -> task_pb2.Task:
        """Answer the pending action (ResumeTask): a decision (`approve`, for approvals and "outcome
        unknown") or input `parts` (for an input request); the task then continues."""
        request = agent_service_pb2.ResumeTaskRequest(
            task_id=task_id, action_id=action_id, request_id=request_id
        )
        if approve is not None:
            request.decision.CopyFrom(agent_service_pb2.ApprovalDecision(approve=approve, reason=reason))
        else:
            request.input.CopyFrom(agent_service_pb2.UserInput(parts=list(parts)))
        task: task_pb2.Task = await _call(
            lambda: self._stub.ResumeTask(request, metadata=self.metadata, timeout=timeout)
        )
        return task

    async def watch_task(self, task_id: str, after_event_id: str = "") -> AsyncIterator[task_pb2.TaskEvent]:
        request = agent_service_pb2.WatchTaskRequest(task_id=task_id, after_event_id=after_event_id)
        stream: Any = self._stub.WatchTask(request, metadata=self.metadata)
        try:
            async for event in stream:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

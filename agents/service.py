"""`AgentService` for one domain: the gRPC adapter over `agents.handler.AgentHandler`.

Each method resolves the verified caller (`agents.caller.resolve_caller` of
the principal the server edge published) and calls the transport-free
handler; the scopes each RPC needs are in `agents.handler.access_rules`.

Run: resolve the caller, check the request (sizes, ids, limits against the
caps), refuse a delegation chain deeper than the spec allows, admit it under
the rate limits, then run it inline through `TaskQueue.run`: the same task
record, checkpoints and idempotency keys as a submitted task ("Run and tasks
are one model"). If the caller's deadline comes first, the queue takes the
task over (STOP_REASON_HANDED_OFF) and a worker resumes it from its last
checkpoint; if it pauses for an approval, it is returned in INPUT_REQUIRED.

The durable path is served by the same task layer: SubmitTask queues,
GetTask/ListTasks/WatchTask read, CancelTask cancels within one step,
ResumeTask answers a paused task; the agent process's TaskWorker executes
them with the same `TaskExecutor` as Run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf import empty_pb2

from agentmesh.kit.auth import current_principal
from agentmesh.kit.streams import StreamSlots
from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc, task_pb2
from agents.caller import Caller, resolve_caller
from agents.handler import AgentHandler

log = logging.getLogger(__name__)

SERVICE = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"]
# Time kept back from the caller's deadline to hand the task off and send the answer.
RESPONSE_MARGIN_S = 0.3
# Without a caller deadline, Run waits for the task's own deadline plus this.
NO_DEADLINE_SLACK_S = 5.0


def _caller() -> Caller:
    return resolve_caller(current_principal())


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(self, handler: AgentHandler, *, streams: StreamSlots | None = None) -> None:
        self.handler = handler
        # Open WatchTask streams, bounded per replica and per caller (a transport resource).
        self.streams = streams or StreamSlots()

    async def Run(
        self, request: agent_service_pb2.RunRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.RunResponse:
        task = await self.handler.run(request, _caller(), wait_s=lambda budget: _wait_budget(context, budget))
        return agent_service_pb2.RunResponse(task=_view(task, request.view))

    async def SubmitTask(
        self, request: agent_service_pb2.SubmitTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        return await self.handler.submit_task(request, _caller())

    async def ResumeTask(
        self, request: agent_service_pb2.ResumeTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        return await self.handler.resume_task(request, _caller())

    async def CancelTask(
        self, request: agent_service_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        return await self.handler.cancel_task(request, _caller())

    async def GetTask(
        self, request: agent_service_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        return await self.handler.get_task(request, _caller())

    async def ListTasks(
        self, request: agent_service_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.ListTasksResponse:
        return await self.handler.list_tasks(request, _caller())

    async def WatchTask(
        self, request: agent_service_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_pb2.TaskEvent]:
        caller = _caller()
        with self.streams.hold(f"{caller.tenant}/{caller.user}"):
            async for event in self.handler.watch_task(request, caller):
                yield event

    async def GetAgentCard(
        self, request: agent_service_pb2.GetAgentCardRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.AgentCard:
        return self.handler.agent_card()

    async def DeleteSession(
        self, request: agent_service_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.handler.delete_session(request, _caller())
        return empty_pb2.Empty()

    async def GetUsage(
        self, request: agent_service_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.GetUsageResponse:
        return await self.handler.get_usage(request, _caller())

    async def ForgetUser(
        self, request: agent_service_pb2.ForgetUserRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.ForgetUserResponse:
        return await self.handler.forget_user(request, _caller())


def _wait_budget(context: grpc.aio.ServicerContext, task_deadline_s: float) -> float:
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return task_deadline_s + NO_DEADLINE_SLACK_S
    return max(0.05, remaining - RESPONSE_MARGIN_S)


def _view(task: task_pb2.Task, view: int) -> task_pb2.Task:
    if view == task_pb2.TASK_VIEW_BASIC:
        trimmed = task_pb2.Task()
        trimmed.CopyFrom(task)
        del trimmed.steps[:]
        return trimmed
    return task

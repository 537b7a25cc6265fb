"""`AgentService` for one domain: thin handlers over the task layer and the runner.

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

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import empty_pb2

from agentmesh.kit.errors import FailedPrecondition, NotFound, PermissionDenied
from agentmesh.kit.validation import OPAQUE_ID, Violations
from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc, errors_pb2, task_pb2
from agents.admission import RunAdmission
from agents.caller import DEPTH_LABEL, Caller, resolve_caller
from agents.executor import TaskExecutor
from agents.requests import check_list_request, check_run_request, check_session_id, check_submit_request
from agents.session_context import SessionContext
from agents.spec import DomainSpec
from memory.tasks.queue import TaskQueue
from memory.usage import UsageStore

log = logging.getLogger(__name__)

SERVICE = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"]
# Time kept back from the caller's deadline to hand the task off and send the answer.
RESPONSE_MARGIN_S = 0.3
# Without a caller deadline, Run waits for the task's own deadline plus this.
NO_DEADLINE_SLACK_S = 5.0


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        spec: DomainSpec,
        card: Callable[[], agent_service_pb2.AgentCard],
        *,
        queue: TaskQueue,
        executor: TaskExecutor,
        admission: RunAdmission,
        sessions: SessionContext,
        usage: UsageStore,
        draining: asyncio.Event | None = None,
    ) -> None:
        self.spec = spec
        self.card = card
        self.queue = queue
        self.executor = executor
        self.admission = admission
        self.sessions = sessions
        self.usage = usage
        self.draining = draining or asyncio.Event()

    # -- running --------------------------------------------------------------------------

    def _check_depth(self, caller: Caller) -> None:
        if caller.delegation_depth > self.spec.max_delegation_depth:
            raise FailedPrecondition(
                f"delegation depth {caller.delegation_depth} exceeds the {self.spec.slug} agent's limit of "
                f"{self.spec.max_delegation_depth}",
                reason=errors_pb2.ERROR_REASON_DELEGATION_TOO_DEEP,
                metadata={"depth": str(caller.delegation_depth), "max": str(self.spec.max_delegation_depth)},
            )

    async def Run(
        self, request: agent_service_pb2.RunRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.RunResponse:
        caller = resolve_caller(context.invocation_metadata())
        budget = check_run_request(self.spec, request)
        self._check_depth(caller)
        await self.admission.admit(caller)
        if caller.delegation_depth:
            request.labels[DEPTH_LABEL] = str(caller.delegation_depth)
        task = await self.queue.run(
            request,
            self.executor,
            tenant=caller.tenant,
            owner=caller.user,
            timeout_s=_wait_budget(context, budget.deadline_s),
            limits=budget.to_proto(),
        )
        return agent_service_pb2.RunResponse(task=_view(task, request.view))

    async def SubmitTask(
        self, request: agent_service_pb2.SubmitTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        caller = resolve_caller(context.invocation_metadata())
        budget = check_submit_request(self.spec, request)
        self._check_depth(caller)
        await self.admission.admit(caller)
        if caller.delegation_depth:
            request.labels[DEPTH_LABEL] = str(caller.delegation_depth)
        return await self.queue.submit(
            request, tenant=caller.tenant, owner=caller.user, limits=budget.to_proto()
        )

    async def ResumeTask(
        self, request: agent_service_pb2.ResumeTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        caller = resolve_caller(context.invocation_metadata())
        return await self.queue.resume(request, tenant=caller.tenant, owner=caller.user)

    async def CancelTask(
        self, request: agent_service_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        caller = resolve_caller(context.invocation_metadata())
        _check_task_id(request.task_id)
        violations = Violations()
        violations.max_length(request.reason, 1024, "reason")
        violations.raise_if_any("invalid CancelTask request")
        return await self.queue.store.cancel(
            request.task_id, tenant=caller.tenant, owner=caller.user, reason=request.reason
        )

    # -- reading ----------------------------------------------------------------------------

    async def GetTask(
        self, request: agent_service_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        caller = resolve_caller(context.invocation_metadata())
        _check_task_id(request.task_id)
        view = request.view or task_pb2.TASK_VIEW_FULL
        return await self.queue.store.get(request.task_id, tenant=caller.tenant, owner=caller.user, view=view)

    async def ListTasks(
        self, request: agent_service_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.ListTasksResponse:
        caller = resolve_caller(context.invocation_metadata())
        check_list_request(request)
        view = request.view or task_pb2.TASK_VIEW_BASIC
        if request.filter == agent_service_pb2.TASK_FILTER_AWAITING_APPROVAL:
            scope = f"{self.spec.slug}:approve"
            if scope not in caller.scopes:
                raise PermissionDenied(
                    f"listing tasks that await approval needs the {scope!r} scope",
                    reason=errors_pb2.ERROR_REASON_MISSING_SCOPE,
                    metadata={"scope": scope},
                )
            page = await self.queue.store.list_awaiting_approval(
                tenant=caller.tenant, page_size=request.page_size, page_token=request.page_token, view=view
            )
        else:
            page = await self.queue.store.list_tasks(
                tenant=caller.tenant,
                owner=caller.user,
                states=list(request.states),
                session_id=request.session_id,
                page_size=request.page_size,
                page_token=request.page_token,
                view=view,
            )
        return agent_service_pb2.ListTasksResponse(tasks=page.tasks, next_page_token=page.next_page_token)

    async def WatchTask(
        self, request: agent_service_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_pb2.TaskEvent]:
        caller = resolve_caller(context.invocation_metadata())
        _check_task_id(request.task_id)
        async for event in self.queue.events.watch(
            request.task_id,
            tenant=caller.tenant,
            owner=caller.user,
            after_event_id=request.after_event_id,
            stop=self.draining,
        ):
            yield event

    # -- the agent and its memory --------------------------------------------------------

    async def GetAgentCard(
        self, request: agent_service_pb2.GetAgentCardRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.AgentCard:
        return self.card()

    async def DeleteSession(
        self, request: agent_service_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        caller = resolve_caller(context.invocation_metadata())
        check_session_id(request.session_id)
        if not await self.sessions.forget(caller, request.session_id):
            raise NotFound(
                f"session {request.session_id!r} not found",
                reason=errors_pb2.ERROR_REASON_SESSION_NOT_FOUND,
                metadata={"session_id": request.session_id},
            )
        return empty_pb2.Empty()

    async def GetUsage(
        self, request: agent_service_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.GetUsageResponse:
        caller = resolve_caller(context.invocation_metadata())
        check_session_id(request.session_id, required=False)
        return await self.usage.get_usage(caller.tenant, caller.user, self.spec.slug, request.session_id)


def _check_task_id(task_id: str) -> None:
    violations = Violations()
    if violations.required(task_id, "task_id"):
        violations.matches(task_id, OPAQUE_ID, "task_id", "task id")
    violations.raise_if_any("invalid task id")


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

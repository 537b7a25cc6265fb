"""The agent's transport-free request handler: typed requests + verified `Caller` -> domain objects.

Every entry point of an agent (the native gRPC servicer in agents/service.py,
an A2A adapter beside it) is a thin adapter over `AgentHandler`: it resolves
the caller from the verified principal and calls one method here. What each
RPC needs is declared once, in `access_rules` (the scopes per method, which the
server edge enforces before any handler runs) and `Access` (the scopes some
RPCs need only for part of what they do: approving, tenant-wide reads).

Visibility (DESIGN.md "Visibility"): tasks, sessions and usage are read by
(tenant, owner) in the store layer, so another user or tenant gets NOT_FOUND;
the one exception is an approver — `<domain>:approve` in the task's tenant —
who lists, reads and answers tasks of this domain that wait for approval,
and who is not the task's owner unless the spec sets `allow_self_approval`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from agentmesh.kit.auth import PUBLIC, MethodRule
from agentmesh.kit.errors import FailedPrecondition, NotFound, PermissionDenied
from agentmesh.kit.validation import OPAQUE_ID, Violations
from agentmesh.v1 import agent_service_pb2, errors_pb2, task_pb2
from agents.admission import RunAdmission
from agents.caller import Caller
from agents.executor import TaskExecutor
from agents.requests import (
    check_list_request,
    check_run_request,
    check_session_id,
    check_submit_request,
    new_task,
    pending_action_answer,
)
from agents.session_context import SessionContext
from agents.spec import DomainSpec
from memory.connection import AnyRedis
from memory.forget import find_user_data, forget_user
from memory.tasks.queue import TaskQueue
from memory.tasks.records import APPROVAL_KINDS
from memory.tasks.states import INPUT_REQUIRED
from memory.tasks.store import not_found
from memory.usage import UsageStore

SERVICE_NAME = "agentmesh.v1.AgentService"
MEMORY_ADMIN = "memory:admin"
USAGE_ADMIN = "usage:admin"


@dataclass(frozen=True, slots=True)
class Access:
    """The scopes of one domain: to use it, to approve its tasks, to administer memory and usage."""

    use: tuple[str, ...]
    approve: str
    memory_admin: str = MEMORY_ADMIN
    usage_admin: str = USAGE_ADMIN

    @classmethod
    def of(cls, spec: DomainSpec) -> Access:
        return cls(use=tuple(spec.required_scopes), approve=f"{spec.slug}:approve")


def access_rules(spec: DomainSpec) -> dict[str, MethodRule]:
    """The one table of what each AgentService RPC needs before its handler runs.

    Methods not named here need an authenticated caller and no scope; the
    handlers below add what depends on the request (approving, tenant-wide reads).
    """
    access = Access.of(spec)
    rules = {
        "Run": MethodRule(scopes=access.use),
        "SubmitTask": MethodRule(scopes=access.use),
        "GetTask": MethodRule(),
        "ListTasks": MethodRule(),  # the awaiting-approval filter: + approve (list_tasks)
        "WatchTask": MethodRule(),
        "CancelTask": MethodRule(),
        "ResumeTask": MethodRule(),  # a decision on an approval: + approve, not the owner (resume)
        "GetAgentCard": PUBLIC,  # what the card says is public (also at /.well-known/agent-card.json)
        "DeleteSession": MethodRule(),
        "GetUsage": MethodRule(),  # another user's usage: + usage:admin (usage)
        "ForgetUser": MethodRule(scopes=(access.memory_admin,)),
    }
    return {f"{SERVICE_NAME}/{name}": rule for name, rule in rules.items()}


def missing_scope(scope: str, what: str) -> PermissionDenied:
    return PermissionDenied(
        f"{what} needs the {scope!r} scope",
        reason=errors_pb2.ERROR_REASON_MISSING_SCOPE,
        metadata={"scope": scope},
    )


class AgentHandler:
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
        redis: AnyRedis | None = None,
        draining: asyncio.Event | None = None,
    ) -> None:
        self.spec = spec
        self.redis = redis
        self.access = Access.of(spec)
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

    def _check_use(self, caller: Caller) -> None:
        # The edge checked these already (access_rules); kept here so any adapter is held to them.
        if caller.authenticated:
            for scope in self.access.use:
                if not caller.has_scope(scope):
                    raise missing_scope(scope, f"using the {self.spec.slug} agent")

    async def run(
        self, request: agent_service_pb2.RunRequest, caller: Caller, *, wait_s: Callable[[float], float]
    ) -> task_pb2.Task:
        budget = check_run_request(self.spec, request)
        self._check_use(caller)
        self._check_depth(caller)
        await self.admission.admit(caller)
        _label(request.labels, caller.labels())
        return await self.queue.run(
            new_task(request),
            self.executor,
            tenant=caller.tenant,
            owner=caller.user,
            timeout_s=wait_s(budget.deadline_s),
            limits=budget.to_proto(),
        )

    async def submit_task(
        self, request: agent_service_pb2.SubmitTaskRequest, caller: Caller
    ) -> task_pb2.Task:
        budget = check_submit_request(self.spec, request)
        self._check_use(caller)
        self._check_depth(caller)
        await self.admission.admit(caller)
        _label(request.labels, caller.labels())
        return await self.queue.submit(
            new_task(request), tenant=caller.tenant, owner=caller.user, limits=budget.to_proto()
        )

    async def resume_task(
        self, request: agent_service_pb2.ResumeTaskRequest, caller: Caller
    ) -> task_pb2.Task:
        answer = pending_action_answer(request)
        if not request.HasField("decision"):
            return await self.queue.resume(answer, tenant=caller.tenant, owner=caller.user)
        own = await self._own_task(request.task_id, caller)
        if own is not None:
            if not caller.authenticated or self._may_approve_own(caller):
                # Insecure mode (the dev identity decides, as before auth), or a domain that lets an
                # approver approve their own tasks: recorded with the caller as the approver.
                if not caller.authenticated:
                    return await self.queue.resume(answer, tenant=caller.tenant, owner=caller.user)
                return await self.queue.resume_as_approver(answer, tenant=caller.tenant, approver=caller.user)
            awaits_decision = own.state == INPUT_REQUIRED and own.pending_action.kind in APPROVAL_KINDS
            if awaits_decision and request.decision.approve:  # rejecting grants nothing: owners may
                if not caller.has_scope(self.access.approve):
                    raise missing_scope(self.access.approve, "deciding on a pending action")
                raise PermissionDenied(
                    f"the owner of a task cannot approve its pending actions in the {self.spec.slug} domain; "
                    "another user holding the approve scope must",
                    reason=errors_pb2.ERROR_REASON_MISSING_SCOPE,
                    metadata={"scope": self.access.approve, "task_id": own.task_id},
                )
            # Not awaiting an approval: the task layer refuses it with the reason its state gives.
            return await self.queue.resume(answer, tenant=caller.tenant, owner=caller.user)
        if not caller.has_scope(self.access.approve):
            raise not_found(request.task_id)  # someone else's task: no hint that it exists
        return await self.queue.resume_as_approver(answer, tenant=caller.tenant, approver=caller.user)

    def _may_approve_own(self, caller: Caller) -> bool:
        return self.spec.allow_self_approval and caller.has_scope(self.access.approve)

    async def _own_task(self, task_id: str, caller: Caller) -> task_pb2.Task | None:
        check_task_id(task_id)
        try:
            return await self.queue.store.get(
                task_id, tenant=caller.tenant, owner=caller.user, view=task_pb2.TASK_VIEW_BASIC
            )
        except NotFound:
            return None

    async def cancel_task(
        self, request: agent_service_pb2.CancelTaskRequest, caller: Caller
    ) -> task_pb2.Task:
        check_task_id(request.task_id)
        violations = Violations()
        violations.max_length(request.reason, 1024, "reason")
        violations.raise_if_any("invalid CancelTask request")
        return await self.queue.store.cancel(
            request.task_id, tenant=caller.tenant, owner=caller.user, reason=request.reason
        )

    # -- reading ----------------------------------------------------------------------------

    async def get_task(self, request: agent_service_pb2.GetTaskRequest, caller: Caller) -> task_pb2.Task:
        check_task_id(request.task_id)
        view = request.view or task_pb2.TASK_VIEW_FULL
        try:
            return await self.queue.store.get(
                request.task_id, tenant=caller.tenant, owner=caller.user, view=view
            )
        except NotFound:
            if not caller.has_scope(self.access.approve):
                raise
            return await self.queue.store.get_awaiting_approval(
                request.task_id, tenant=caller.tenant, view=view
            )

    async def list_tasks(
        self, request: agent_service_pb2.ListTasksRequest, caller: Caller
    ) -> agent_service_pb2.ListTasksResponse:
        check_list_request(request)
        view = request.view or task_pb2.TASK_VIEW_BASIC
        if request.filter == agent_service_pb2.TASK_FILTER_AWAITING_APPROVAL:
            if not caller.has_scope(self.access.approve):
                raise missing_scope(self.access.approve, "listing tasks that await approval")
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

    def watch_task(
        self, request: agent_service_pb2.WatchTaskRequest, caller: Caller
    ) -> AsyncIterator[task_pb2.TaskEvent]:
        check_task_id(request.task_id)
        return self.queue.events.watch(
            request.task_id,
            tenant=caller.tenant,
            owner=caller.user,
            after_event_id=request.after_event_id,
            stop=self.draining,
        )

    # -- the agent and its memory --------------------------------------------------------

    def agent_card(self) -> agent_service_pb2.AgentCard:
        return self.card()

    async def delete_session(self, request: agent_service_pb2.DeleteSessionRequest, caller: Caller) -> None:
        check_session_id(request.session_id)
        if not await self.sessions.forget(caller, request.session_id):
            raise NotFound(
                f"session {request.session_id!r} not found",
                reason=errors_pb2.ERROR_REASON_SESSION_NOT_FOUND,
                metadata={"session_id": request.session_id},
            )

    async def get_usage(
        self, request: agent_service_pb2.GetUsageRequest, caller: Caller
    ) -> agent_service_pb2.GetUsageResponse:
        check_session_id(request.session_id, required=False)
        report = await self.usage.get_usage(caller.tenant, caller.user, self.spec.slug, request.session_id)
        return agent_service_pb2.GetUsageResponse(usage=report.usage, tasks=report.tasks)

    async def forget_user(
        self, request: agent_service_pb2.ForgetUserRequest, caller: Caller
    ) -> agent_service_pb2.ForgetUserResponse:
        """Everything memory holds about one user of the caller's tenant (`memory:admin`, tenant-wide)."""
        if caller.authenticated and not caller.has_scope(self.access.memory_admin):
            raise missing_scope(self.access.memory_admin, "forgetting a user")
        violations = Violations()
        if violations.required(request.user, "user"):
            violations.matches(request.user, OPAQUE_ID, "user", "user id")
        violations.raise_if_any("invalid ForgetUser request")
        if self.redis is None:
            raise FailedPrecondition("this agent has no memory store to forget from")
        if request.validate_only:
            counts = (await find_user_data(self.redis, caller.tenant, request.user)).counts()
        else:
            counts = (await forget_user(self.redis, caller.tenant, request.user)).deleted
        return agent_service_pb2.ForgetUserResponse(tenant=caller.tenant, user=request.user, deleted=counts)


def check_task_id(task_id: str) -> None:
    violations = Violations()
    if violations.required(task_id, "task_id"):
        violations.matches(task_id, OPAQUE_ID, "task_id", "task id")
    violations.raise_if_any("invalid task id")


def _label(labels: Mapping[str, str] | object, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        labels[key] = value  # type: ignore[index]

"""`AgentService` for one domain: thin handlers over the runner and the ports.

Run: resolve the caller, check the request (sizes, ids, limits against the
caps), refuse a delegation chain deeper than the spec allows, admit it under
the rate limits, open a task record (idempotent on `request_id`), then run
the plan → act → observe loop inline. The loop runs in its own asyncio task:
if the caller's deadline comes first, Run answers with the task as it is
(WORKING, stop reason HANDED_OFF) and the loop carries on to the task's own
deadline, checkpointing every step, so GetTask/WatchTask see it finish.
When the loop ends the task record gets the outcome, the session the turn,
and the usage counters the usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import empty_pb2

from agentmesh import metrics
from agentmesh.errors import FailedPrecondition, NotFound, Unimplemented
from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc, errors_pb2, task_pb2
from agentmesh.validation import OPAQUE_ID, Violations
from agents.caller import Caller, resolve_caller
from agents.limits import Budget
from agents.machine import Outcome, Pricing, RunMachine, TaskInput, free, render_input
from agents.model.types import ChatModel
from agents.ports import Admission, NewTask, SessionMemory, TaskLedger, ToolBox, UsageLedger
from agents.requests import check_run_request, check_session_id
from agents.runner import drive
from agents.spec import DomainSpec

log = logging.getLogger(__name__)

SERVICE = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"]
# Time kept back from the caller's deadline to store and send the answer.
RESPONSE_MARGIN_S = 0.25


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        spec: DomainSpec,
        card: agent_service_pb2.AgentCard,
        *,
        model: ChatModel,
        tasks: TaskLedger,
        sessions: SessionMemory,
        usage: UsageLedger,
        admission: Admission,
        tools: ToolBox,
        pricing: Pricing = free,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.card = card
        self.model = model
        self.tasks = tasks
        self.sessions = sessions
        self.usage = usage
        self.admission = admission
        self.tools = tools
        self.pricing = pricing
        self.clock = clock
        self._running: set[asyncio.Task[task_pb2.Task]] = set()
        self._in_flight = metrics.AGENT_RUNS_IN_FLIGHT.labels(spec.slug)

    # -- Run ------------------------------------------------------------------

    async def Run(
        self, request: agent_service_pb2.RunRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.RunResponse:
        caller = resolve_caller(context.invocation_metadata())
        budget = check_run_request(self.spec, request)
        if caller.delegation_depth > self.spec.max_delegation_depth:
            raise FailedPrecondition(
                f"delegation depth {caller.delegation_depth} exceeds the {self.spec.slug} agent's limit of "
                f"{self.spec.max_delegation_depth}",
                reason=errors_pb2.ERROR_REASON_DELEGATION_TOO_DEEP,
                metadata={"depth": str(caller.delegation_depth), "max": str(self.spec.max_delegation_depth)},
            )
        await self.admission.admit(caller, self.spec.slug)
        task, created = await self.tasks.open(NewTask(self.spec.slug, caller, request, budget.to_proto()))
        if created:
            handle = asyncio.create_task(self._execute(task, caller, request), name=f"task {task.task_id}")
            self._running.add(handle)
            self._in_flight.inc()
            handle.add_done_callback(self._done)
            wait = _wait_budget(context, budget.deadline_s)
            try:
                task = await asyncio.wait_for(asyncio.shield(handle), wait)
            except TimeoutError:
                task = await self.tasks.get(task.task_id, caller)
                if task.state in (task_pb2.TASK_STATE_WORKING, task_pb2.TASK_STATE_SUBMITTED):
                    task.stop_reason = task_pb2.STOP_REASON_HANDED_OFF
                    task.status_message = "still running; follow it with GetTask or WatchTask"
        return agent_service_pb2.RunResponse(task=_view(task, request.view))

    def _done(self, handle: asyncio.Task[task_pb2.Task]) -> None:
        self._running.discard(handle)
        self._in_flight.dec()
        if not handle.cancelled() and handle.exception() is not None:
            log.error("task ended with an unexpected error", exc_info=handle.exception())

    async def _execute(
        self, task: task_pb2.Task, caller: Caller, request: agent_service_pb2.RunRequest
    ) -> task_pb2.Task:
        """The whole loop of one task, to its outcome (survives the Run call's end)."""
        session_id = request.session_id
        context = await self.sessions.context(caller, self.spec.slug, session_id) if session_id else ()
        offers = await self.tools.offers(self.spec.tools, caller)
        created_at = task.create_time.ToNanoseconds() / 1e9 if task.HasField("create_time") else self.clock()
        machine = RunMachine(
            self.spec,
            budget=Budget.from_proto(task.limits),
            task=TaskInput(
                task.task_id, render_input(request.instruction, request.parts), context, created_at
            ),
            offers=offers,
            model_name=self.model.model_name,
            pricing=self.pricing,
            headers={"x-agentmesh-domain": self.spec.slug},
        )
        outcome = await drive(
            machine,
            model=self.model,
            tools=self.tools,
            journal=self.tasks.journal(task),
            caller=caller,
            clock=self.clock,
        )
        usage = machine.tally.to_proto()
        final = await self.tasks.close(task, outcome, usage)
        await self._remember(caller, session_id, machine, outcome, final, usage)
        return final

    async def _remember(
        self,
        caller: Caller,
        session_id: str,
        machine: RunMachine,
        outcome: Outcome,
        final: task_pb2.Task,
        usage: task_pb2.Usage,
    ) -> None:
        # Bookkeeping after the outcome is stored: a failure here must not lose the task's result.
        with contextlib.suppress(Exception):
            await self.usage.record(caller, self.spec.slug, session_id, usage)
        if session_id and machine.user_turn is not None:
            answer = outcome.final_answer or outcome.message
            try:
                await self.sessions.remember(
                    caller, self.spec.slug, session_id, machine.user_turn, answer, final
                )
            except Exception:
                log.exception("could not append the task to its session", extra={"task_id": final.task_id})

    # -- the rest ----------------------------------------------------------------

    async def GetAgentCard(
        self, request: agent_service_pb2.GetAgentCardRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.AgentCard:
        return self.card

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
        usage, tasks = await self.usage.read(caller, self.spec.slug, request.session_id)
        return agent_service_pb2.GetUsageResponse(usage=usage, tasks=tasks)

    async def GetTask(
        self, request: agent_service_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        caller = resolve_caller(context.invocation_metadata())
        violations = Violations()
        if violations.required(request.task_id, "task_id"):
            violations.matches(request.task_id, OPAQUE_ID, "task_id", "task id")
        violations.raise_if_any("invalid GetTask request")
        return _view(await self.tasks.get(request.task_id, caller), request.view)

    async def SubmitTask(
        self, request: agent_service_pb2.SubmitTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        raise _later("SubmitTask")

    async def ListTasks(
        self, request: agent_service_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.ListTasksResponse:
        raise _later("ListTasks")

    async def WatchTask(
        self, request: agent_service_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_pb2.TaskEvent]:
        raise _later("WatchTask")
        yield task_pb2.TaskEvent()  # pragma: no cover - makes this an async generator

    async def CancelTask(
        self, request: agent_service_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        raise _later("CancelTask")

    async def ResumeTask(
        self, request: agent_service_pb2.ResumeTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        raise _later("ResumeTask")

    # -- lifecycle -------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Give running tasks `grace` seconds to finish; the rest stay WORKING at their last checkpoint."""
        if not self._running:
            return
        _, pending = await asyncio.wait(set(self._running), timeout=grace)
        for handle in pending:
            handle.cancel()
        if pending:
            log.warning("stopped with tasks still running", extra={"tasks": len(pending)})


def _later(method: str) -> Unimplemented:
    return Unimplemented(f"{method} is not served by this agent yet (durable agent tasks)")


def _wait_budget(context: grpc.aio.ServicerContext, task_deadline_s: float) -> float:
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return task_deadline_s + 5.0
    return max(0.0, remaining - RESPONSE_MARGIN_S)


def _view(task: task_pb2.Task, view: int) -> task_pb2.Task:
    if view == task_pb2.TASK_VIEW_BASIC:
        trimmed = task_pb2.Task()
        trimmed.CopyFrom(task)
        del trimmed.steps[:]
        return trimmed
    return task

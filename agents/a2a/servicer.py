"""`lf.a2a.v1.A2AService`: the A2A v1.0 gRPC binding, a thin adapter over `AgentHandler`.

Served by every agent process beside `agentmesh.v1.AgentService`, behind the
same server edge: A2A callers present the same JWTs and get the same scopes
checked (`a2a_access_rules`). A2A tasks are mesh tasks (agents.a2a.mapping):
any replica answers, tasks survive restarts, and a task is reachable over
both protocols.

- SendMessage: a new message is a SubmitTask keyed by its message id; blocking
  (the default) runs it inline like `Run` and answers with the task as it
  stands at the deadline (or with a message when the model replied with a
  direct message; the task record stays, short-lived, as for Run);
  `return_immediately` answers at once (SUBMITTED). A message naming a task
  that waits for input resumes it (blocking: answered once it settles again).
- SendStreamingMessage / SubscribeToTask: the task, then its status and
  artifact updates from WatchTask (any replica), ending with a terminal or
  interrupted state. A new message's stream waits for the model's first turn:
  a direct message reply streams that one Message instead (A2A: a stream that
  starts with a Message ends after it).
- Push notifications and the extended card are not offered (UNIMPLEMENTED),
  as the card says.
- Errors: the A2A reasons with ErrorInfo domain `a2a-protocol.org` (task not
  found, not cancelable, invalid params, unsupported version); identity errors
  keep the mesh's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc

from agentmesh.kit.auth import MethodRule, current_principal
from agentmesh.kit.errors import (
    AgentmeshError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.a2a.mapping import (
    FINAL_STATES,
    direct_reply,
    list_filter,
    part_from_a2a,
    stream_responses,
    submit_request,
    task_to_a2a,
)
from agents.caller import Caller, resolve_caller
from agents.handler import AgentHandler
from agents.machine import reply_of

A2A_DOMAIN = "a2a-protocol.org"
A2A_SERVICE = a2a.DESCRIPTOR.services_by_name["A2AService"]
VERSION_HEADER = "a2a-version"
SUPPORTED_MAJOR = "1"
# How long a blocking follow-up message waits for the resumed task without a caller deadline.
FOLLOW_UP_WAIT_S = 60.0
TERMINAL = frozenset(
    {
        task_pb2.TASK_STATE_COMPLETED,
        task_pb2.TASK_STATE_FAILED,
        task_pb2.TASK_STATE_CANCELED,
        task_pb2.TASK_STATE_REJECTED,
    }
)


def a2a_access_rules(use: tuple[str, ...]) -> dict[str, MethodRule]:
    """What each A2A RPC needs at the edge: the domain's scopes to start work, a token for the rest."""
    starts = {"SendMessage", "SendStreamingMessage"}
    return {
        f"{A2A_SERVICE.full_name}/{method.name}": MethodRule(scopes=use if method.name in starts else ())
        for method in A2A_SERVICE.methods
    }


def a2a_error(code_of: type[AgentmeshError], message: str, reason: str) -> AgentmeshError:
    return code_of(message, reason=reason, domain=A2A_DOMAIN)


@contextlib.contextmanager
def a2a_errors(task_id: str = "") -> Iterator[None]:
    """The A2A reason for what the mesh refused (identity and limits keep the mesh's reasons)."""
    try:
        yield
    except NotFound as exc:
        raise a2a_error(NotFound, exc.message, "TASK_NOT_FOUND") from None
    except InvalidArgument as exc:
        error = a2a_error(InvalidArgument, exc.message, "INVALID_PARAMS")
        error.violations = exc.violations
        raise error from None
    except FailedPrecondition as exc:
        if exc.reason == "INVALID_STATE":
            raise a2a_error(
                FailedPrecondition,
                f"task {task_id[:80]} is not cancelable: {exc.message}",
                "TASK_NOT_CANCELABLE",
            ) from None
        raise


def check_version(context: grpc.aio.ServicerContext) -> None:
    """A2A v1.x only: a missing header means 0.3 (the spec's rule), which is not served."""
    version = ""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == VERSION_HEADER and isinstance(value, str):
            version = value.strip()
    if version.split(".")[0] != SUPPORTED_MAJOR:
        shown = version[:16] or "0.3 (no a2a-version header)"
        raise a2a_error(
            Unimplemented,
            f"A2A version {shown} is not supported; this agent speaks 1.0",
            "VERSION_NOT_SUPPORTED",
        )


def _caller() -> Caller:
    return resolve_caller(current_principal())


def invalid_params(field: str, description: str) -> AgentmeshError:
    error = a2a_error(InvalidArgument, f"invalid A2A request: {field} {description}", "INVALID_PARAMS")
    error.violations = (FieldViolation(field, description),)
    return error


def _history(length: int, present: bool, field: str = "history_length") -> int | None:
    """The history length asked for (None: all of it); a negative one is refused, as the spec says."""
    if present and length < 0:
        raise invalid_params(field, "must be 0 or more")
    return length if present else None


MAX_PAGE_SIZE = 100  # ListTasks: the spec's page size range is 1-100


def check_list(request: a2a.ListTasksRequest) -> None:
    if request.HasField("page_size") and not 1 <= request.page_size <= MAX_PAGE_SIZE:
        raise invalid_params("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")


class A2AServicer(a2a_pb2_grpc.A2AServiceServicer):
    def __init__(self, handler: AgentHandler, *, response_margin_s: float = 0.3) -> None:
        self.handler = handler
        self.response_margin_s = response_margin_s

    # -- messages ---------------------------------------------------------------------------

    async def SendMessage(
        self, request: a2a.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> a2a.SendMessageResponse:
        check_version(context)
        caller = _caller()
        config = request.configuration
        history = _history(config.history_length, config.HasField("history_length"))
        with a2a_errors(request.message.task_id):
            follow_up = await self._follow_up(request.message, caller)
            if follow_up is not None:
                if not config.return_immediately:  # blocking: the resumed task as it settles
                    follow_up = await self._settled(follow_up, caller, context)
                return a2a.SendMessageResponse(task=task_to_a2a(follow_up, history_length=history))
            submit = submit_request(request.message)
            if config.return_immediately:
                task = await self.handler.submit_task(submit, caller)
            else:
                run = agent_service_pb2.RunRequest(
                    instruction=submit.instruction,
                    parts=submit.parts,
                    session_id=submit.session_id,
                    request_id=submit.request_id,
                )
                task = await self.handler.run(run, caller, wait_s=lambda budget: self._wait(context, budget))
                if task.state == task_pb2.TASK_STATE_COMPLETED and reply_of(task.steps) == "message":
                    # The model answered with a message, not a task (the record stays, as for Run).
                    return a2a.SendMessageResponse(message=direct_reply(task))
        return a2a.SendMessageResponse(task=task_to_a2a(task, history_length=history))

    async def SendStreamingMessage(
        self, request: a2a.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[a2a.StreamResponse]:
        check_version(context)
        caller = _caller()
        with a2a_errors(request.message.task_id):
            task = await self._follow_up(request.message, caller)
            new = task is None
            if task is None:
                task = await self.handler.submit_task(submit_request(request.message), caller)
        async for response in self._follow(task, caller, may_reply=new):
            yield response

    async def _settled(
        self, task: task_pb2.Task, caller: Caller, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        """The task once it ends or is interrupted, or as it stands when the caller's deadline nears."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._wait(context, FOLLOW_UP_WAIT_S)):
                async for _ in self._follow(task, caller):
                    pass
        # The full view: the history shows the question asked and the answer given.
        return await self.handler.get_task(agent_service_pb2.GetTaskRequest(task_id=task.task_id), caller)

    async def _follow_up(self, message: a2a.Message, caller: Caller) -> task_pb2.Task | None:
        """A message naming an existing task: resume it if it waits for input, refuse otherwise."""
        if not message.task_id:
            return None
        task = await self.handler.get_task(
            agent_service_pb2.GetTaskRequest(task_id=message.task_id, view=task_pb2.TASK_VIEW_BASIC), caller
        )
        if task.state != task_pb2.TASK_STATE_INPUT_REQUIRED:
            state = task_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_").lower()
            raise a2a_error(
                FailedPrecondition,
                f"task {task.task_id} is {state}: only a task waiting for input takes a follow-up message",
                "UNSUPPORTED_OPERATION",
            )
        resume = agent_service_pb2.ResumeTaskRequest(
            task_id=task.task_id, action_id=task.pending_action.action_id, request_id=message.message_id[:128]
        )
        for part in message.parts:
            if part.WhichOneof("content") == "text":
                resume.input.parts.add(text=part.text)
            else:
                converted = part_from_a2a(part, "message.parts")
                if converted is not None:
                    resume.input.parts.append(converted)
        return await self.handler.resume_task(resume, caller)

    # -- tasks ------------------------------------------------------------------------------

    async def GetTask(self, request: a2a.GetTaskRequest, context: grpc.aio.ServicerContext) -> a2a.Task:
        check_version(context)
        history = _history(request.history_length, request.HasField("history_length"))
        with a2a_errors(request.id):
            task = await self.handler.get_task(
                agent_service_pb2.GetTaskRequest(task_id=request.id), _caller()
            )
        return task_to_a2a(task, history_length=history)

    async def ListTasks(
        self, request: a2a.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> a2a.ListTasksResponse:
        check_version(context)
        check_list(request)
        history = _history(request.history_length, request.HasField("history_length"))
        states, session_id = list_filter(request)
        history = _history(request.history_length, request.HasField("history_length"))
        # Steps (the full view) only when a history beyond the first message is shown.
        view = task_pb2.TASK_VIEW_BASIC if history == 0 else task_pb2.TASK_VIEW_FULL
        with a2a_errors():
            page = await self.handler.list_tasks(
                agent_service_pb2.ListTasksRequest(
                    page_size=request.page_size,
                    page_token=request.page_token,
                    states=states,
                    session_id=session_id,
                    view=view,
                ),
                _caller(),
            )
        tasks = [task_to_a2a(task, history_length=history) for task in page.tasks]
        if not request.include_artifacts:
            for task in tasks:
                del task.artifacts[:]
        return a2a.ListTasksResponse(
            tasks=tasks, next_page_token=page.next_page_token, page_size=request.page_size or len(tasks)
        )

    async def CancelTask(self, request: a2a.CancelTaskRequest, context: grpc.aio.ServicerContext) -> a2a.Task:
        check_version(context)
        with a2a_errors(request.id):  # a finished task: INVALID_STATE -> TASK_NOT_CANCELABLE
            task = await self.handler.cancel_task(
                agent_service_pb2.CancelTaskRequest(task_id=request.id, reason="canceled over A2A"), _caller()
            )
        return task_to_a2a(task)

    async def SubscribeToTask(
        self, request: a2a.SubscribeToTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[a2a.StreamResponse]:
        check_version(context)
        caller = _caller()
        with a2a_errors(request.id):
            task = await self.handler.get_task(agent_service_pb2.GetTaskRequest(task_id=request.id), caller)
        if task.state in TERMINAL:
            raise a2a_error(
                FailedPrecondition,
                f"task {request.id} has finished: read it with GetTask",
                "UNSUPPORTED_OPERATION",
            )
        async for response in self._follow(task, caller):
            yield response

    async def _follow(
        self, task: task_pb2.Task, caller: Caller, *, may_reply: bool = False
    ) -> AsyncIterator[a2a.StreamResponse]:
        """The task, then its updates until a terminal or interrupted state.

        `may_reply` (a new message's stream): the events wait for the model's first
        turn. When it is a direct message reply, the stream is that one Message (A2A:
        a stream that starts with a Message ends after it), as SendMessage answers;
        anything else releases the held task events in order and the stream goes on.
        """
        held: list[a2a.StreamResponse] | None = [] if may_reply else None
        replying = False
        first = a2a.StreamResponse(task=task_to_a2a(task))
        if held is None:
            yield first
        else:
            held.append(first)
        if first.task.status.state in FINAL_STATES:
            for response in held or ():
                yield response
            return
        watch = agent_service_pb2.WatchTaskRequest(task_id=task.task_id, after_event_id=task.last_event_id)
        async for event in self.handler.watch_task(watch, caller):
            kind = event.WhichOneof("event")
            if kind == "status_update" and event.status_update.final_answer:
                task.final_answer = event.status_update.final_answer
            responses = list(stream_responses(event, task))
            if held is not None:
                turn = _model_turn(event)
                replying = replying or turn == "message"
                final = any(_is_final(r) for r in responses)
                if replying and final and event.status_update.state == task_pb2.TASK_STATE_COMPLETED:
                    yield a2a.StreamResponse(message=direct_reply(task))
                    return
                if kind != "artifact_update" and not final and (replying or turn is None):
                    held.extend(responses)  # not decided yet
                    continue
                # Not a direct message reply: release what was held, in order.
                for response in held:
                    yield response
                held = None
            for response in responses:
                yield response
                if _is_final(response):
                    return

    # -- not offered ------------------------------------------------------------------------

    async def CreateTaskPushNotificationConfig(
        self, request: object, context: grpc.aio.ServicerContext
    ) -> None:
        raise _no_push()

    async def GetTaskPushNotificationConfig(self, request: object, context: grpc.aio.ServicerContext) -> None:
        raise _no_push()

    async def ListTaskPushNotificationConfigs(
        self, request: object, context: grpc.aio.ServicerContext
    ) -> None:
        raise _no_push()

    async def DeleteTaskPushNotificationConfig(
        self, request: object, context: grpc.aio.ServicerContext
    ) -> None:
        raise _no_push()

    async def GetExtendedAgentCard(self, request: object, context: grpc.aio.ServicerContext) -> None:
        raise a2a_error(
            Unimplemented, "this agent has no extended card", "EXTENDED_AGENT_CARD_NOT_CONFIGURED"
        )

    def _wait(self, context: grpc.aio.ServicerContext, task_deadline_s: float) -> float:
        remaining: float | None = context.time_remaining()
        if remaining is None:
            return task_deadline_s + 5.0
        return max(0.05, remaining - self.response_margin_s)


def _is_final(response: a2a.StreamResponse) -> bool:
    return response.HasField("status_update") and response.status_update.status.state in FINAL_STATES


def _model_turn(event: task_pb2.TaskEvent) -> str | None:
    """How a finished model turn was meant (`message`, `task`, …); None for any other event."""
    if event.WhichOneof("event") != "step_update" or not event.step_update.finished:
        return None
    step = event.step_update.step
    return reply_of([step]) if step.kind == task_pb2.STEP_KIND_MODEL_CALL else None


def _no_push() -> AgentmeshError:
    return a2a_error(Unimplemented, "push notifications are not offered", "PUSH_NOTIFICATION_NOT_SUPPORTED")

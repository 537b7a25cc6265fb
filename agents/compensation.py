"""Compensations: undo the completed side effects of a task that ends FAILED.

A domain spec may name, for a side-effecting tool, the tool that undoes one of its
calls (`tools[].compensation`, e.g. `inventory_reserve` → `inventory_release`).
When a task ends FAILED after such a call completed — a budget ran out, a policy
stopped it, the model failed, or it was dead-lettered after too many lost
attempts — the runtime calls the compensating tool once for each completed call,
newest first (docs/compensation.md):

- `plan` (pure) picks the completed calls (OK or deduplicated) of tools with a
  declared compensation that have no compensation step yet, and builds each
  compensating call's arguments from JSON Pointers into the completed call's
  arguments and result.
- `Compensator.run` makes each call through the domain's `RegistryToolBox`
  (the same resolver, invoker, retries, scopes and tokens as any tool call), with
  the idempotency key `<task id>:<compensation step index>`, and records each as a
  `STEP_KIND_COMPENSATION` step (checkpointed: a task event for watchers). A
  compensation that fails is recorded with its error and never retried beyond the
  invoker's own retries; a compensation already recorded is never made again, so a
  task cannot loop on its compensations. A crash between the call and its record
  repeats the call under the same key: the tool's dedupe replays it.
- Calls *in doubt* (a NON_IDEMPOTENT call whose outcome is unknown, or a call the
  model asked for whose result was never checkpointed: the worker died after
  sending it) may or may not have happened. They are compensated only when the
  compensation declares `in_doubt`: a compensating tool that is safe to call
  either way (`inventory_release_reserved`: nothing reserved under that key,
  nothing changes), with arguments from the call's arguments and its idempotency
  key (there is no result). Otherwise they are listed, not compensated.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentmesh.v1 import task_pb2
from agents.actions import ToolInvocation, ToolOffer
from agents.caller import Caller, caller_of_task
from agents.model.types import ToolCall
from agents.observations import ToolObservation, observation
from agents.runner import ToolGateway
from agents.spec import Compensation, DomainSpec, InDoubtCompensation
from memory.tasks.effects import unanswered_calls

log = logging.getLogger(__name__)

# How long one compensating call may take (the failed task's own deadline may be gone).
COMPENSATION_TIMEOUT_S = 30.0
_DONE = (task_pb2.TOOL_OUTCOME_OK, task_pb2.TOOL_OUTCOME_DEDUPLICATED)

Record = Callable[[task_pb2.Step], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Planned:
    """One compensating call to make: for `undoes` (a completed step), `tool` with `arguments`
    (None when they could not be built: `problem` says why, and the call is recorded as failed)."""

    undoes: task_pb2.Step
    tool: str
    version: str
    arguments: dict[str, Any] | None
    problem: str = ""
    in_doubt: bool = False  # `undoes` may or may not have happened: the in-doubt compensation


def plan(spec: DomainSpec, steps: Sequence[task_pb2.Step], task_id: str = "") -> list[Planned]:
    """The compensations still owed for `steps`, newest call first: completed calls of a tool with a
    compensation, and calls in doubt of a tool whose compensation declares `in_doubt`."""
    declared = {tool.name: tool.compensation for tool in spec.tools if tool.compensation is not None}
    done = {s.compensated_step for s in steps if s.kind == task_pb2.STEP_KIND_COMPENSATION}
    owed = []
    # Asked for, never answered: the newest calls of all (the worker died after sending the first).
    unanswered = [
        task_pb2.Step(
            index=call.index,
            kind=task_pb2.STEP_KIND_TOOL_CALL,
            tool_name=call.tool,
            arguments_json=call.arguments_json,
            call_id=call.call_id,
            outcome=task_pb2.TOOL_OUTCOME_UNKNOWN,
        )
        for call in unanswered_calls(list(steps))
    ]
    for step in [*reversed(unanswered), *reversed(steps)]:
        if step.kind != task_pb2.STEP_KIND_TOOL_CALL or step.index in done:
            continue
        compensation = declared.get(step.tool_name)
        if compensation is None:
            continue
        if step.outcome in _DONE:
            arguments, problem = compensation_arguments(compensation, step)
            owed.append(Planned(step, compensation.tool, compensation.version, arguments, problem))
        elif step.outcome == task_pb2.TOOL_OUTCOME_UNKNOWN and compensation.in_doubt is not None:
            undo = compensation.in_doubt
            arguments, problem = in_doubt_arguments(undo, step, f"{task_id}:{step.index}")
            owed.append(Planned(step, undo.tool, undo.version, arguments, problem, in_doubt=True))
    return owed


def in_doubt_arguments(
    undo: InDoubtCompensation, step: task_pb2.Step, idempotency_key: str
) -> tuple[dict[str, Any] | None, str]:
    """The in-doubt compensation's arguments for `step` (sent with `idempotency_key`), or (None, why not)."""
    try:
        arguments = json.loads(step.arguments_json) if step.arguments_json else {}
    except ValueError as exc:
        return None, f"step {step.index} holds no JSON to build the arguments from ({exc})"
    document = {"arguments": arguments, "idempotency_key": idempotency_key}
    built: dict[str, Any] = {}
    for name, pointer in undo.arguments.items():
        found, value = resolve_pointer(document, pointer)
        if not found:
            return None, f"{pointer} is not in step {step.index}'s arguments"
        built[name] = value
    return built, ""


def compensation_arguments(
    compensation: Compensation, step: task_pb2.Step
) -> tuple[dict[str, Any] | None, str]:
    """The compensating call's arguments for a completed `step`, or (None, why not)."""
    try:
        arguments = json.loads(step.arguments_json) if step.arguments_json else {}
        body = json.loads(step.result_json) if step.result_json else {}
    except ValueError as exc:
        return None, f"step {step.index} holds no JSON to build the arguments from ({exc})"
    if compensation.arguments is None:
        return (arguments, "") if isinstance(arguments, dict) else (None, "the arguments are not an object")
    document = {"arguments": arguments, "result": body.get("result") if isinstance(body, dict) else None}
    built: dict[str, Any] = {}
    for name, pointer in compensation.arguments.items():
        found, value = resolve_pointer(document, pointer)
        if not found:
            return None, f"{pointer} is not in step {step.index}'s arguments or result"
        built[name] = value
    return built, ""


def resolve_pointer(document: Any, pointer: str) -> tuple[bool, Any]:
    """RFC 6901: (found, value)."""
    value = document
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return False, None
    return value is not None, value


@dataclass(frozen=True, slots=True)
class Failure:
    """Why the task failed: recorded with each compensation, so a task whose compensation was
    interrupted (its worker died) ends with the same reason when another worker finishes it."""

    stop_reason: int
    error: task_pb2.TaskError
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "stop_reason": task_pb2.StopReason.Name(self.stop_reason),  # type: ignore[arg-type]
            "reason": self.error.reason,
            "message": self.message or self.error.message,
            "error_message": self.error.message,
            "metadata": dict(self.error.metadata),
        }


def failure_of(step: task_pb2.Step) -> Failure | None:
    """The failure a compensation step was made for (recorded in its result)."""
    try:
        failure = json.loads(step.result_json)["task_failure"]
        return Failure(
            stop_reason=task_pb2.StopReason.Value(str(failure["stop_reason"])),
            error=task_pb2.TaskError(
                reason=str(failure.get("reason", "")),
                message=str(failure.get("error_message", "")),
                metadata={str(k): str(v) for k, v in dict(failure.get("metadata", {})).items()},
            ),
            message=str(failure.get("message", "")),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class Compensator:
    def __init__(
        self, spec: DomainSpec, tools: ToolGateway, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.spec = spec
        self.tools = tools
        self.clock = clock

    @property
    def declared(self) -> bool:
        return any(tool.compensation is not None for tool in self.spec.tools)

    async def run(
        self,
        task: task_pb2.Task,
        steps: Sequence[task_pb2.Step],
        failure: Failure,
        record: Record,
        *,
        caller: Caller | None = None,
    ) -> list[task_pb2.Step]:
        """Make the compensations `steps` still owe, recording each as the next step; returns them."""
        owed = plan(self.spec, steps, task.task_id)
        if not owed:
            return []
        who = caller or caller_of_task(task)
        made: list[task_pb2.Step] = []
        index = len(steps)
        for item in owed:
            step = await self._one(task.task_id, item, index, failure, who)
            await record(step)
            made.append(step)
            index += 1
            log.info(
                "compensated step %d (%s) with %s: %s",
                item.undoes.index,
                item.undoes.tool_name,
                item.tool,
                step.summary,
                extra={"task_id": task.task_id},
            )
        return made

    async def settle_failed(
        self, task: task_pb2.Task, stop_reason: int, error: task_pb2.TaskError, message: str, record: Record
    ) -> None:
        """memory.tasks.settlement's `settle_failed` hook: compensate a task the task layer is about to fail
        (dead-lettered, or its pending action expired)."""
        await self.run(task, task.steps, Failure(stop_reason, error, message), record)

    async def _one(
        self, task_id: str, item: Planned, index: int, failure: Failure, caller: Caller
    ) -> task_pb2.Step:
        started = self.clock()
        raw = json.dumps(item.arguments, separators=(",", ":")) if item.arguments is not None else ""
        if item.arguments is None:
            result = ToolObservation(
                outcome=task_pb2.TOOL_OUTCOME_ERROR,
                status_code="FAILED_PRECONDITION",
                message=f"compensation not attempted: {item.problem}",
                attempts=0,
            )
        else:
            offer = ToolOffer(name=item.tool, version=item.version, definition={})
            call = ToolCall(f"compensate-{item.undoes.index}", item.tool, raw, item.arguments)
            invocation = ToolInvocation(call, offer, index, f"{task_id}:{index}")
            try:
                result = await self.tools.invoke(invocation, caller=caller, timeout=COMPENSATION_TIMEOUT_S)
            except Exception as exc:  # recorded, never retried here: a compensation must not loop
                log.exception("compensating call crashed", extra={"task_id": task_id, "tool": item.tool})
                result = ToolObservation(
                    outcome=task_pb2.TOOL_OUTCOME_ERROR,
                    status_code="INTERNAL",
                    message=f"the compensating call failed: {type(exc).__name__}",
                    attempts=0,
                )
        content, summary = observation(item.tool, result, limit=self.spec.max_observation_bytes)
        body = json.loads(content)
        body["task_failure"] = failure.as_dict()
        step = task_pb2.Step(
            index=index,
            kind=task_pb2.STEP_KIND_COMPENSATION,
            tool_name=item.tool,
            tool_version=result.version or "",
            arguments_json=raw,
            result_json=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
            outcome=result.outcome,
            summary=(
                f"undo {'in-doubt ' if item.in_doubt else ''}step {item.undoes.index} "
                f"({item.undoes.tool_name}): {summary}"
            )[:200],
            attempts=result.attempts,
            call_id=f"compensate-{item.undoes.index}",
            status_code=result.status_code,
            compensated_step=item.undoes.index,
        )
        step.start_time.FromNanoseconds(int(started * 1e9))
        step.duration.FromNanoseconds(int(max(0.0, self.clock() - started) * 1e9))
        return step

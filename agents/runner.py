"""The runner: performs the state machine's actions (model calls, tool calls, checkpoints).

    outcome = await drive(machine, model=model, tools=gateway, journal=journal, caller=caller)

`agents.machine.RunMachine` decides; this loop does the I/O: each model call
with the smaller of the model timeout and the time left before the task's
deadline, each tool call through the `ToolGateway` (resolution, validation,
retries by side-effect class, idempotency key = task id + step index), and
every step checkpointed through the `StepJournal`, whose answer says whether
the task was canceled meanwhile or a budget beyond its own ran out (checked
between steps). Checkpoints are written in order in the background while the
next model call or read-only tool call runs; before a call with a side effect
(and at the end) the loop waits until every earlier step is durable, so a
resumed task repeats the same decision under the same idempotency key. At the end, a last step
that is a model turn (the final answer, as a rule) is not saved on its own: it is handed to the
journal's `checkpoint_last`, and the task layer writes it with the outcome (one round trip per
task less). A step of a tool call is always saved on its own before the task ends. Metrics and
spans follow the GenAI conventions (`invoke_agent`, `chat`, `execute_tool`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from agentmesh.kit import metrics
from agentmesh.v1 import task_pb2, tool_options_pb2
from agents.actions import Finished, ModelCall, RunOutcome, ToolInvocation, ToolOffer
from agents.caller import Caller
from agents.limits import LimitReached
from agents.machine import RunMachine
from agents.model.types import ChatModel, ModelError
from agents.observations import ToolObservation
from agents.spec import DomainSpec

log = logging.getLogger(__name__)
tracer = trace.get_tracer("agentmesh.agents")
# Tool outcomes that mark the execute_tool span as failed (a refusal the model can fix is not).
_FAILED_TOOL_OUTCOMES = {task_pb2.TOOL_OUTCOME_ERROR, task_pb2.TOOL_OUTCOME_UNKNOWN}

_KIND = {
    task_pb2.STEP_KIND_MODEL_CALL: "model",
    task_pb2.STEP_KIND_TOOL_CALL: "tool",
    task_pb2.STEP_KIND_SANITIZE: "sanitize",
    task_pb2.STEP_KIND_COMPACTION: "compaction",
    task_pb2.STEP_KIND_DELEGATION: "delegation",
}


class ToolGateway(Protocol):
    """Calls one tool for the runner: validation, retries, idempotency key, compact result."""

    async def invoke(
        self, invocation: ToolInvocation, *, caller: Caller, timeout: float
    ) -> ToolObservation: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the journal learned while storing a step: stop the task?"""

    canceled: str | None = None  # the cancel reason when the owner canceled the task
    exhausted: LimitReached | None = None  # a budget beyond the task's own (e.g. the user's daily tokens)


CONTINUE = Verdict()


class ToolBox(ToolGateway, Protocol):
    async def offers(self, spec: DomainSpec, caller: Caller) -> list[ToolOffer]:
        """The domain's tools the model may see: resolved from the registry; unresolvable ones left out."""
        ...


class StepJournal(Protocol):
    """Where steps are checkpointed and their usage recorded."""

    async def checkpoint(
        self,
        step: task_pb2.Step,
        usage: task_pb2.Usage,
        artifacts: Sequence[task_pb2.ArtifactUpdate] = (),
    ) -> Verdict:
        """Store a finished step with the task's usage so far and the artifacts it delivered
        (stored with the task, streamed as artifact updates); the verdict says whether to stop."""
        ...

    async def checkpoint_last(
        self,
        step: task_pb2.Step,
        usage: task_pb2.Usage,
        artifacts: Sequence[task_pb2.ArtifactUpdate] = (),
    ) -> None:
        """The task's last step (a model turn; the task ends next): stored with the outcome, or
        like `checkpoint` by a journal that cannot wait for it."""
        ...

    async def settle(self) -> Verdict:
        """Wait for bookkeeping still in flight (the task is ending)."""
        ...


class _Checkpoints:
    """Saves the machine's steps in order in the background; `drain` waits until all are saved.

    The loop only waits for it before a side effect and at the end (see the module
    docstring); otherwise steps are saved while the next model or tool call runs.
    A failure to save (Redis gone, the attempt fenced off) surfaces at the next check.
    """

    def __init__(
        self, machine: RunMachine, journal: StepJournal, usage: Callable[[], task_pb2.Usage]
    ) -> None:
        self.machine = machine
        self.journal = journal
        self.usage = usage
        self.saved = machine.replayed
        self.ending = False  # the task ends: the background saver leaves a last model turn alone
        self._task: asyncio.Task[None] | None = None
        self._canceled: str | None = None
        self._exhausted: LimitReached | None = None

    def kick(self) -> None:
        if (self._task is None or self._task.done()) and self.saved < self._end():
            self._check()
            self._task = asyncio.create_task(self._save(), name="checkpoints")

    def _end(self) -> int:
        """How many steps the background saver saves: all of them, except a last model turn once
        the task ends (`finish` hands it to the journal's `checkpoint_last`)."""
        steps = self.machine.steps
        if self.ending and steps and len(steps) > self.saved and _with_outcome(steps[-1]):
            return len(steps) - 1
        return len(steps)

    async def _save(self) -> None:
        while self.saved < self._end():
            step = self.machine.steps[self.saved]
            _count(self.machine, step)
            verdict = await self.journal.checkpoint(
                step, self.usage(), self.machine.step_artifacts(step.index)
            )
            self.saved += 1
            if verdict.canceled is not None:
                self._canceled = verdict.canceled
            self._exhausted = self._exhausted or verdict.exhausted

    def _check(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            if error is not None:
                raise error

    async def drain(self) -> None:
        while True:
            if self._task is not None:
                await self._task
            if self.saved >= self._end():
                return
            self.kick()

    async def finish(self) -> None:
        """The task ends: save every step but a last model turn, which goes to the journal's
        `checkpoint_last` (written with the outcome)."""
        self.ending = True
        await self.drain()
        self._check()
        if self.saved < len(self.machine.steps):
            step = self.machine.steps[self.saved]
            _count(self.machine, step)
            await self.journal.checkpoint_last(step, self.usage(), self.machine.step_artifacts(step.index))
            self.saved += 1

    def verdict(self) -> Verdict:
        """What the saved steps learned (cancel, budget), once; raises if saving failed."""
        self._check()
        if self._canceled is None and self._exhausted is None:
            return CONTINUE
        verdict = Verdict(self._canceled, self._exhausted)
        self._canceled, self._exhausted = None, None
        return verdict

    def abandon(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


async def drive(
    machine: RunMachine,
    *,
    model: ChatModel,
    tools: ToolGateway,
    journal: StepJournal,
    caller: Caller,
    clock: Callable[[], float] = time.time,
) -> RunOutcome:
    domain = machine.spec.slug
    started = clock()
    earlier = machine.tally.wall_time_s  # wall time of earlier attempts of a resumed task

    def usage() -> task_pb2.Usage:
        machine.tally.wall_time_s = earlier + clock() - started
        return machine.tally.to_proto()

    checkpoints = _Checkpoints(machine, journal, usage)

    def apply(verdict: Verdict) -> bool:
        if verdict.canceled is not None:
            machine.cancel(verdict.canceled or "canceled by its owner")
        if verdict.exhausted is not None:
            machine.stop(verdict.exhausted)
        return verdict is not CONTINUE

    with tracer.start_as_current_span(
        f"invoke_agent {domain}",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": domain,
            "agentmesh.task_id": machine.task.task_id,
        },
    ) as span:
        try:
            while True:
                apply(checkpoints.verdict())
                action = machine.next_action(clock())
                if isinstance(action, Finished):
                    await checkpoints.finish()
                    await journal.settle()
                    outcome = action.outcome
                    break
                if _has_effects(action):
                    # Everything that led to a side effect is durable before it happens, so a
                    # resumed task makes the same decision with the same idempotency key.
                    await checkpoints.drain()
                    if apply(checkpoints.verdict()):
                        machine.withdraw()
                        continue
                else:
                    # Model calls and read-only tools need no such guarantee: the previous
                    # steps are saved while they run.
                    checkpoints.kick()
                if isinstance(action, ModelCall):
                    await _model_call(machine, action, model, clock)
                else:
                    await _tool_call(machine, action, tools, caller, clock)
                checkpoints.kick()
        finally:
            checkpoints.abandon()
        machine.tally.wall_time_s = earlier + clock() - started
        state = task_pb2.TaskState.Name(outcome.state).removeprefix("TASK_STATE_")
        reason = task_pb2.StopReason.Name(outcome.stop_reason).removeprefix("STOP_REASON_")
        span.set_attribute("agentmesh.task.state", state)
        span.set_attribute("agentmesh.task.stop_reason", reason)
        metrics.AGENT_TASKS.labels(domain, state, reason).inc()
        return outcome


def _with_outcome(step: task_pb2.Step) -> bool:
    """Whether the task's last step may wait to be written with its outcome: a model turn, whose
    loss in a crash only repeats the turn (a tool call's step is saved on its own, always)."""
    return step.kind == task_pb2.STEP_KIND_MODEL_CALL


def _has_effects(action: ModelCall | ToolInvocation) -> bool:
    return (
        isinstance(action, ToolInvocation)
        and action.offer.side_effect != tool_options_pb2.SIDE_EFFECT_READ_ONLY
    )


def _count(machine: RunMachine, step: task_pb2.Step) -> None:
    domain = machine.spec.slug
    metrics.AGENT_STEPS.labels(domain, _KIND.get(step.kind, "other")).inc()
    if step.kind in (task_pb2.STEP_KIND_TOOL_CALL, task_pb2.STEP_KIND_DELEGATION):
        # Label by allowed tool only: a model inventing names must not grow the label set.
        tool = step.tool_name if step.tool_name in machine.offers else "unknown"
        outcome = task_pb2.ToolOutcome.Name(step.outcome).removeprefix("TOOL_OUTCOME_")
        metrics.AGENT_TOOL_CALLS.labels(domain, tool, outcome).inc()


async def _model_call(
    machine: RunMachine, action: ModelCall, model: ChatModel, clock: Callable[[], float]
) -> None:
    domain = machine.spec.slug
    started = clock()
    timeout = min(machine.spec.model.timeout.total_seconds(), machine.deadline - started)
    with tracer.start_as_current_span(
        f"chat {model.model_name}",
        kind=trace.SpanKind.CLIENT,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": model.model_name},
    ) as span:
        try:
            turn = await model.complete(action.request, timeout=timeout)
        except ModelError as exc:
            finished = clock()
            metrics.AGENT_MODEL_LATENCY.labels(domain).observe(finished - started)
            span.set_attribute("error.type", exc.reason)
            span.set_status(Status(StatusCode.ERROR, exc.reason))
            if finished >= machine.deadline:
                machine.interrupted(finished)
            else:
                log.warning("model call failed: %s", exc.message, extra={"reason": exc.reason})
                machine.model_failed(exc, started=started, duration=finished - started)
            return
        finished = clock()
        metrics.AGENT_MODEL_LATENCY.labels(domain).observe(finished - started)
        span.set_attribute("gen_ai.response.model", turn.model)
        span.set_attribute("gen_ai.usage.input_tokens", turn.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", turn.usage.completion_tokens)
        machine.model_answered(turn, started=started, duration=finished - started)


async def _tool_call(
    machine: RunMachine,
    action: ToolInvocation,
    tools: ToolGateway,
    caller: Caller,
    clock: Callable[[], float],
) -> None:
    started = clock()
    with tracer.start_as_current_span(
        f"execute_tool {action.call.name}",
        kind=trace.SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": action.call.name,
            "gen_ai.tool.call.id": action.call.call_id,
        },
    ) as span:
        result = await tools.invoke(action, caller=caller, timeout=max(0.0, machine.deadline - started))
        outcome = task_pb2.ToolOutcome.Name(result.outcome).removeprefix("TOOL_OUTCOME_")
        span.set_attribute("agentmesh.tool.outcome", outcome)
        if result.outcome in _FAILED_TOOL_OUTCOMES:
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR, outcome))
        machine.tool_finished(result, started=started, duration=clock() - started)

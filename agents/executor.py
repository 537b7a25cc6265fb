"""The task executor: runs or resumes one task of the domain (inline for Run, or on a worker).

The task layer (memory.tasks.queue / memory.tasks.worker) calls it with the task and
a `Checkpointer`; it rebuilds the state machine from the checkpointed steps
(a resumed task never repeats a step), applies the answer of a ResumeTask
(approve / reject / retry), runs the loop with the runner, and returns the
outcome for the task layer to record. Every step is checkpointed and its
usage recorded (task, session, user, day, domain counters) in one go; the
usage store's verdict stops the task when a budget beyond the task's own
limits (the user's daily tokens or cost) runs out. One usage model: a model
turn is priced once, by the state machine with the domain's `PriceTable`; the
usage store adds up the cost the step carries and never prices again. When the task ends, its
turns are appended to the session; its last model turn is checkpointed with the outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence

from agentmesh.kit.config import Settings
from agentmesh.v1 import task_pb2
from agents.actions import RunOutcome, TaskInput, render_input
from agents.caller import caller_of_task
from agents.compensation import Compensator, Failure, failure_of
from agents.limits import Budget, LimitReached
from agents.machine import AGENT_REFUSED, RunMachine
from agents.model.types import ChatModel
from agents.runner import CONTINUE, ToolBox, Verdict, drive
from agents.session_context import SessionContext
from agents.spec import DomainSpec
from memory.prices import NANO, Cost, PriceTable
from memory.tasks.execution import (
    Canceled,
    Checkpointer,
    Completed,
    Failed,
    InputRequired,
    Rejected,
    TaskOutcome,
)
from memory.usage import Attribution, Budgets, StepUsage, UsageStore

log = logging.getLogger(__name__)


def step_usage(step: task_pb2.Step, priced: bool) -> StepUsage:
    """A checkpointed step's usage for the usage store, with the cost the state machine gave it
    (`priced`: whether the task's model has a price; if not, its tokens count as unpriced)."""
    wall = step.duration.seconds + step.duration.nanos / 1e9
    if step.kind in (task_pb2.STEP_KIND_MODEL_CALL, task_pb2.STEP_KIND_SANITIZE):
        return StepUsage.model_call(
            step.usage.prompt_tokens,
            step.usage.completion_tokens,
            Cost(round(step.usage.cost_usd * NANO), priced),
            iterations=step.usage.iterations,
            wall_s=wall,
        )
    return StepUsage(tool_calls=step.usage.tool_calls, tool=step.tool_name, wall_s=wall)


def merge_usage(first: StepUsage, second: StepUsage) -> StepUsage | None:
    """One record for two steps' usage, when the tool attribution stays right (None: it would not)."""
    if first.tool and second.tool and first.tool != second.tool:
        return None
    return StepUsage(
        prompt_tokens=first.prompt_tokens + second.prompt_tokens,
        completion_tokens=first.completion_tokens + second.completion_tokens,
        iterations=first.iterations + second.iterations,
        tool_calls=first.tool_calls + second.tool_calls,
        tool=first.tool or second.tool,
        wall_s=first.wall_s + second.wall_s,
        cost_nusd=first.cost_nusd + second.cost_nusd,
        unpriced_tokens=first.unpriced_tokens + second.unpriced_tokens,
    )


class CheckpointJournal:
    """The runner's journal on the task layer.

    A step's checkpoint is awaited (what a resumed task rebuilds from). Its usage
    (task, session, user, day, domain counters) is recorded by one background
    recorder per task: steps that finish while a record is in flight are merged
    into the next record, so accounting stays off the loop's critical path and
    costs at most one record at a time; its budget verdict (the user's daily
    tokens or cost) is applied at a later checkpoint. `settle` waits for it.
    A failed usage record is logged, not fatal: the task's own Usage stays exact.
    """

    def __init__(
        self,
        checkpoint: Checkpointer,
        usage: UsageStore,
        who: Attribution,
        budgets: Budgets,
        priced: bool,
    ) -> None:
        self.checkpoint_ = checkpoint
        self.usage = usage
        self.who = who
        self.budgets = budgets
        self.priced = priced
        self._queue: list[StepUsage] = []
        self._recorder: asyncio.Task[None] | None = None
        self._exhausted: LimitReached | None = None

    async def checkpoint(
        self,
        step: task_pb2.Step,
        usage: task_pb2.Usage,
        artifacts: Sequence[task_pb2.ArtifactUpdate] = (),
    ) -> Verdict:
        self._enqueue(step_usage(step, self.priced))
        canceled = await self.checkpoint_.save(step, usage=usage, artifacts=artifacts)
        exhausted, self._exhausted = self._exhausted, None
        if not canceled and exhausted is None:
            return CONTINUE
        return Verdict(canceled=self.checkpoint_.cancel_reason if canceled else None, exhausted=exhausted)

    async def checkpoint_last(
        self,
        step: task_pb2.Step,
        usage: task_pb2.Usage,
        artifacts: Sequence[task_pb2.ArtifactUpdate] = (),
    ) -> None:
        """The task's last step: written with the outcome (`Checkpointer.save_last`), its usage
        recorded like any step's."""
        self._enqueue(step_usage(step, self.priced))
        self.checkpoint_.save_last(step, usage=usage, artifacts=artifacts)

    async def settle(self) -> Verdict:
        if self._recorder is not None:
            await self._recorder
        exhausted, self._exhausted = self._exhausted, None
        return CONTINUE if exhausted is None else Verdict(exhausted=exhausted)

    def _enqueue(self, step: StepUsage) -> None:
        merged = merge_usage(self._queue[-1], step) if self._queue else None
        if merged is not None:
            self._queue[-1] = merged
        else:
            self._queue.append(step)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record(), name=f"usage {self.who.task_id}")

    async def _record(self) -> None:
        while self._queue:
            step = self._queue.pop(0)
            try:
                status = await self.usage.record(self.who, step, budgets=self.budgets)
            except Exception as exc:
                log.warning("could not record usage: %s", exc, extra={"task_id": self.who.task_id})
                continue
            if status.exhausted is not None and self._exhausted is None:
                budget = status.exhausted
                self._exhausted = LimitReached(
                    budget.stop_reason,  # type: ignore[arg-type]
                    f"{budget.scope}.{budget.budget}",
                    budget.message,
                )


# A request id the model may see as a header (the scripted model's `header` condition matches it;
# A2A's message id is the task's request id): printable, no separators that could split a header.
_HEADER_SAFE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def model_headers(domain: str, task: task_pb2.Task) -> dict[str, str]:
    """The headers of the task's model requests: its domain, and its request id when header-safe."""
    headers = {"x-agentmesh-domain": domain}
    if _HEADER_SAFE.match(task.request_id):
        headers["x-agentmesh-request-id"] = task.request_id
    return headers


def task_outcome(outcome: RunOutcome, usage: task_pb2.Usage) -> TaskOutcome:
    if outcome.state == task_pb2.TASK_STATE_COMPLETED:
        return Completed(final_answer=outcome.final_answer, usage=usage, message=outcome.message)
    if outcome.state == task_pb2.TASK_STATE_INPUT_REQUIRED and outcome.pending is not None:
        return InputRequired(
            pending_action=outcome.pending,
            stop_reason=outcome.stop_reason,
            message=outcome.message,
            usage=usage,
        )
    if outcome.state == task_pb2.TASK_STATE_CANCELED:
        return Canceled(message=outcome.message)
    refused = outcome.error is not None and outcome.error.reason == AGENT_REFUSED
    if outcome.state == task_pb2.TASK_STATE_REJECTED and outcome.error is not None and refused:
        return Rejected(
            stop_reason=outcome.stop_reason, error=outcome.error, message=outcome.message, usage=usage
        )
    # FAILED, and REJECTED by the sanitizer (the record exists already: it fails with POLICY_DENIED).
    error = outcome.error or task_pb2.TaskError(reason="INTERNAL", message=outcome.message)
    return Failed(stop_reason=outcome.stop_reason, error=error, message=outcome.message, usage=usage)


class TaskExecutor:
    """memory.tasks.execution.Executor for one domain."""

    def __init__(
        self,
        spec: DomainSpec,
        settings: Settings,
        *,
        model: ChatModel,
        tools: ToolBox,
        sessions: SessionContext,
        usage: UsageStore,
        prices: PriceTable | None = None,
        clock: Callable[[], float] = time.time,
        compensator: Compensator | None = None,
    ) -> None:
        self.spec = spec
        self.compensator = compensator or Compensator(spec, tools, clock=clock)
        self.settings = settings
        self.model = model
        self.tools = tools
        self.sessions = sessions
        self.usage = usage
        # The one pricing: the task's model at these prices (none given: unpriced, cost 0).
        self.prices = prices or PriceTable({}, source="none")
        self.clock = clock

    def _price(self, _reported: str, prompt_tokens: int, completion_tokens: int) -> float:
        """The machine's `Pricing`: the configured model's price (what the deployment pays for),
        whatever name the model reports."""
        return self.prices.cost(self.model.model_name, prompt_tokens, completion_tokens).usd

    async def __call__(self, task: task_pb2.Task, checkpoint: Checkpointer, /) -> TaskOutcome:
        caller = caller_of_task(task)
        begun = next((s for s in checkpoint.steps if s.kind == task_pb2.STEP_KIND_COMPENSATION), None)
        if begun is not None:  # the task failed and its worker died while compensating: finish that
            failure = failure_of(begun) or Failure(
                task_pb2.STOP_REASON_UNSPECIFIED,
                task_pb2.TaskError(reason="INTERNAL", message="the task failed; its compensation resumed"),
            )
            await self.compensator.run(task, checkpoint.steps, failure, checkpoint.save, caller=caller)
            return Failed(
                stop_reason=failure.stop_reason,
                error=failure.error,
                message=failure.message,
                usage=task.usage,
            )
        budget = Budget.from_proto(task.limits)
        session = task.session_id
        context = await self.sessions.context(caller, session, token_cap=budget.token_cap) if session else []
        offers = await self.tools.offers(self.spec, caller)
        created = task.create_time.ToNanoseconds() / 1e9 if task.HasField("create_time") else self.clock()
        machine = RunMachine(
            self.spec,
            budget,
            TaskInput(task.task_id, render_input(task.instruction, task.input_parts), context, created),
            offers,
            model_name=self.model.model_name,
            pricing=self._price,
            headers=model_headers(self.spec.slug, task),
        )
        resumption = checkpoint.resumption
        machine.replay(checkpoint.steps, pending=resumption.action if resumption is not None else None)
        machine.tally.wall_time_s = task.usage.wall_time.ToNanoseconds() / 1e9
        if resumption is not None and resumption.answer.HasField("decision"):
            # The approved call's tool token names who approved it (their verified `sub`).
            caller = dataclasses.replace(caller, approver=resumption.approver or task.owner)
            decision = resumption.answer.decision
            machine.decide(
                resumption.action.action_id,
                approve=decision.approve,
                reason=decision.reason,
                now=self.clock(),
            )
        elif resumption is not None and resumption.answer.HasField("input"):
            parts = resumption.answer.input.parts
            text = "\n".join(p.text for p in parts if p.WhichOneof("kind") == "text")
            others = [p for p in parts if p.WhichOneof("kind") != "text"]
            machine.answer(
                resumption.action.action_id,
                render_input(text, others) if others else text,
                now=self.clock(),
                request_id=resumption.answer.request_id,
            )
        journal = CheckpointJournal(
            checkpoint,
            self.usage,
            Attribution(caller.tenant, caller.user, self.spec.slug, task.task_id, session),
            Budgets.from_settings(self.settings),
            self.prices.price(self.model.model_name) is not None,
        )
        outcome = await drive(
            machine, model=self.model, tools=self.tools, journal=journal, caller=caller, clock=self.clock
        )
        usage = machine.tally.to_proto()
        if session and not outcome.waiting:
            try:
                await self.sessions.remember(
                    caller, session, machine.session_turns(), task_id=task.task_id, token_cap=budget.token_cap
                )
            except Exception:  # the outcome matters more than the memory of it
                log.exception("could not append the task to its session", extra={"task_id": task.task_id})
        result = task_outcome(outcome, usage)
        if isinstance(result, Failed) and self.compensator.declared:
            failure = Failure(result.stop_reason, result.error, result.message)
            await self.compensator.run(task, checkpoint.steps, failure, checkpoint.save, caller=caller)
        return result

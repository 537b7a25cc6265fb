"""The plan → act → observe state machine of one task, without any I/O.

    machine = RunMachine(spec, budget, task_input, offers, model_name="gpt-4o-mini")
    while True:
        action = machine.next_action(now=time.time())
        match action:
            case ModelCall():      machine.model_answered(turn, ...) / machine.model_failed(error, ...)
            case ToolInvocation(): machine.tool_finished(result, ...)
            case Finished():       break

The driver (`agents.runner`) performs the actions: model calls, tool calls,
checkpoints. Everything else lives here and is tested without servers: which
tools the model sees, the shape checks of its answers (unknown tool, arguments
that are not a JSON object), budgets with their stop reasons, approvals and
"outcome unknown" parking, how a final turn is meant (an answer, a direct
message, a question that parks the task for input, a refusal), the artifacts
delivered with each step, compact observations, and the step records. Every
decision is a function of the inputs and the events fed in, so the steps of a
task fully determine its state. The actions and outcomes it speaks are in
`agents.actions`; the sanitizer step's request and checks in `agents.sanitizer`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentmesh.kit.errors import echo
from agentmesh.v1 import task_pb2
from agents import limits as budgets
from agents.actions import (
    UNGUARDED,
    Action,
    Finished,
    ModelCall,
    Pricing,
    RunOutcome,
    StaleAction,
    TaskInput,
    ToolInvocation,
    ToolOffer,
    failure,
    free,
    parked_outcome,
    timestamp,
)
from agents.limits import Budget, LimitReached, Tally
from agents.model.types import (
    REPLIES,
    ChatMessage,
    ChatRequest,
    ChatRole,
    MalformedResponse,
    ModelError,
    ModelTurn,
    ModelUnavailable,
    Reply,
    ToolCall,
)
from agents.model.wire import parse_arguments
from agents.observations import ToolObservation, compact_history, denied, invalid_arguments, observation
from agents.sanitizer import CORRECTION_PREFIX, SANITIZE_ATTEMPTS, intent_text, parse_intent, sanitize_request
from agents.spec import DomainSpec

# Consecutive unusable model answers before the task fails with MODEL_ERROR.
MAX_MALFORMED_STREAK = 3
# Observations beyond this many bytes in total get folded into summaries,
# oldest first (the newest always stays whole).
HISTORY_BUDGET_FACTOR = 4
# TaskError.reason of a task the model refused (a REJECTED task; the sanitizer's refusals fail
# with INVALID_REQUEST instead).
AGENT_REFUSED = "AGENT_REFUSED"
_REPLY_SUMMARY = {
    "task": "final answer",
    "message": "direct message reply",
    "input_required": "asks for input",
    "reject": "refused the task",
}


@dataclass(frozen=True, slots=True)
class _Parked:
    action_id: str
    kind: task_pb2.PendingActionKind.ValueType
    call_id: str


@dataclass(slots=True)
class _ObservationSlot:
    position: int  # index into RunMachine._turns
    content: str
    summary: str


def _budget_stop(exhausted: LimitReached, tally: Tally) -> RunOutcome:
    return failure(
        exhausted.stop_reason,
        "BUDGET_EXHAUSTED",
        exhausted.message,
        limit=exhausted.limit,
        iterations=str(tally.iterations),
        tokens=str(tally.total_tokens),
        tool_calls=str(tally.tool_calls),
        **exhausted.metadata,
    )


class RunMachine:
    def __init__(
        self,
        spec: DomainSpec,
        budget: Budget,
        task: TaskInput,
        offers: Sequence[ToolOffer],
        *,
        model_name: str,
        pricing: Pricing = free,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.budget = budget
        self.task = task
        self.offers = {offer.name: offer for offer in offers}
        self.model_name = model_name
        self.pricing = pricing
        self.headers = dict(headers or {})
        self.tally = Tally()
        self.steps: list[task_pb2.Step] = []
        # Steps that came from checkpoints (replay): saved already. Anything after them, even a
        # step recorded before the loop starts (a human's rejection), still has to be saved.
        self.replayed = 0
        self._turns: list[ChatMessage] = []
        self._observations: list[_ObservationSlot] = []
        self._pending: deque[ToolCall] = deque()
        self._approved: dict[str, str] = {}  # call id -> approved action id
        self._malformed_streak = 0
        self._sanitize_attempts = 0
        self._intent: str | None = None if spec.sanitizer else task.instruction
        self._sanitize_feedback = ""
        self._cancel_reason: str | None = None
        self._outcome: RunOutcome | None = None
        self._parked: _Parked | None = None
        # The call an earlier attempt had issued (or was about to) when it stopped.
        self._inherited_call: str | None = None
        # A tool step that parked the task is the last checkpoint, but its pause (the pending
        # action) was never recorded: the attempt that parked died or lost its lease in between.
        self._lost_pause = False
        self._expect: ModelCall | ToolInvocation | None = None
        # Artifacts the model delivered with a step (by step index), saved with that step.
        self._artifacts: dict[int, list[task_pb2.ArtifactUpdate]] = {}

    # -- queries ------------------------------------------------------------

    @property
    def outcome(self) -> RunOutcome | None:
        return self._outcome

    @property
    def user_turn(self) -> str | None:
        """What the session remembers as the user's turn: the instruction, or the sanitized intent."""
        return self._intent

    def session_turns(self) -> list[ChatMessage]:
        """What the session keeps of this task: the user's turn, the tool calls with their
        (already compact) observations, and the answer; corrections to the model are left out."""
        if self._intent is None:
            return []
        kept = [ChatMessage(ChatRole.USER, self._intent)]
        kept += [
            m
            for m in self._turns
            if not (m.role is ChatRole.USER and m.content.startswith(CORRECTION_PREFIX))
        ]
        return kept

    def step_artifacts(self, index: int) -> list[task_pb2.ArtifactUpdate]:
        """The artifact updates delivered with step `index` (checkpointed with it)."""
        return self._artifacts.get(index, [])

    def tool_definitions(self) -> list[Mapping[str, Any]]:
        return [offer.definition for offer in self.offers.values()]

    # -- the decision ---------------------------------------------------------

    def next_action(self, now: float) -> Action:
        if self._outcome is not None:
            return Finished(self._outcome)
        if self._expect is not None:
            raise RuntimeError("next_action called while an action is still outstanding")
        if self._cancel_reason is not None:
            return self._finish(
                RunOutcome(task_pb2.TASK_STATE_CANCELED, task_pb2.STOP_REASON_CANCELED, self._cancel_reason)
            )
        late = budgets.deadline_passed(self.budget, self.task.created_at, now)
        if late is not None:
            return self._finish(_budget_stop(late, self.tally))
        if self._intent is None:
            return self._issue(ModelCall(self._sanitize_request(), len(self.steps), sanitize=True))
        if self._lost_pause:
            return self._park_again(now)
        while self._pending:
            call = self._pending[0]
            offer = self.offers.get(call.name)
            if offer is None:
                self._pending.popleft()
                reason = (
                    f"tool {call.name!r} does not exist or is not available to the {self.spec.slug} agent"
                    if call.name
                    else "the tool call has no function name"
                )
                self._record_tool_step(call, None, denied(reason), now, 0.0)
                continue
            if call.arguments is None:
                self._pending.popleft()
                self._record_tool_step(
                    call, offer, invalid_arguments(call.arguments_error or "bad arguments"), now, 0.0
                )
                continue
            exhausted = budgets.before_tool_call(self.budget, self.tally)
            if exhausted is not None:
                return self._finish(_budget_stop(exhausted, self.tally))
            approval = self._approved.get(call.call_id, "")
            inherited = call.call_id == self._inherited_call
            self._inherited_call = None
            if inherited and offer.side_effect in UNGUARDED and not approval:
                # An earlier attempt stopped with this call issued or about to be: it may have
                # happened, and the tool cannot deduplicate a repeat. A human decides.
                self._pending.popleft()
                why = "the task was interrupted while this call may have been in flight"
                result = ToolObservation(outcome=task_pb2.TOOL_OUTCOME_UNKNOWN, message=why, attempts=0)
                self._record_tool_step(call, offer, result, now, 0.0)
                return self._park(
                    call,
                    task_pb2.PENDING_ACTION_KIND_OUTCOME_UNKNOWN,
                    task_pb2.STOP_REASON_OUTCOME_UNKNOWN,
                    why,
                    now,
                )
            if offer.requires_approval and not approval:
                return self._park_for_approval(
                    call, offer, now, "this tool needs a human approval for every call"
                )
            index = len(self.steps)
            return self._issue(
                ToolInvocation(call, offer, index, f"{self.task.task_id}:{index}", approval=approval)
            )
        exhausted = budgets.before_model_call(self.budget, self.tally)
        if exhausted is not None:
            return self._finish(_budget_stop(exhausted, self.tally))
        return self._issue(ModelCall(self._act_request(), len(self.steps)))

    def interrupted(self, now: float) -> None:
        """The outstanding call was cut off by the task's deadline: stop with DEADLINE, not an error."""
        self._expect = None
        late = budgets.deadline_passed(self.budget, self.task.created_at, now)
        self._finish(_budget_stop(late or budgets.deadline_exhausted(self.budget), self.tally))

    @property
    def deadline(self) -> float:
        """When the task's deadline passes (epoch seconds)."""
        return self.task.created_at + self.budget.deadline_s

    def cancel(self, reason: str = "canceled by its owner") -> None:
        """Stop at the next step boundary."""
        self._cancel_reason = reason
        if self._parked is not None:  # a parked task is canceled at once
            self._parked = None
            self._outcome = None

    def withdraw(self) -> None:
        """Take back the outstanding action without an answer (it was never performed)."""
        self._expect = None

    def stop(self, exhausted: LimitReached) -> None:
        """A budget outside the task's own limits ran out (e.g. the user's daily tokens): stop now."""
        self._finish(_budget_stop(exhausted, self.tally))

    @property
    def parked_action(self) -> str | None:
        return self._parked.action_id if self._parked else None

    def decide(self, action_id: str, *, approve: bool, reason: str = "", now: float) -> None:
        """A human's answer to the pending action (ResumeTask); the task then continues.

        Approval: approve runs the call (with the approval attached), reject
        tells the model it was rejected. RunOutcome unknown: approve retries the
        call, reject tells the model the effect is unknown and not to repeat it.
        """
        parked = self._parked
        if parked is None or parked.action_id != action_id:
            raise StaleAction(
                f"no pending action {echo(action_id)}" + (f" (pending: {parked.action_id})" if parked else "")
            )
        if parked.kind == task_pb2.PENDING_ACTION_KIND_INPUT:
            raise StaleAction(f"pending action {echo(action_id)} waits for input, not a decision")
        call = self._pending[0]
        offer = self.offers.get(call.name)
        self._parked = None
        self._outcome = None
        if approve:
            self._approved[call.call_id] = action_id
            return
        self._pending.popleft()
        if parked.kind == task_pb2.PENDING_ACTION_KIND_APPROVAL:
            result = ToolObservation(
                task_pb2.TOOL_OUTCOME_REJECTED,
                message=f"a human rejected this call{': ' + reason if reason else ''}",
                attempts=0,
            )
            self._record_tool_step(call, offer, result, now, 0.0)
        else:
            result = ToolObservation(
                task_pb2.TOOL_OUTCOME_UNKNOWN,
                message="a human decided not to retry; the effect may or may not have happened"
                + (f" ({reason})" if reason else ""),
                attempts=0,
            )
            self._record_tool_step(call, offer, result, now, 0.0, announce=True)

    def answer(self, action_id: str, text: str, *, now: float, request_id: str = "") -> None:
        """The caller's answer to the model's question (ResumeTask with input); the task continues.

        `request_id` (the ResumeTask's; over A2A the follow-up message's id) is kept with the
        step, so the task's A2A history names the user's message by its own id.
        """
        parked = self._parked
        if (
            parked is None
            or parked.action_id != action_id
            or parked.kind != task_pb2.PENDING_ACTION_KIND_INPUT
        ):
            raise StaleAction(f"no pending question {echo(action_id)}")
        self._parked = None
        self._outcome = None
        self._add_step(
            task_pb2.Step(
                kind=task_pb2.STEP_KIND_USER_INPUT,
                summary=f"the caller answered: {text}"[:200],
                result_json=json.dumps(
                    {"text": text, **({"request_id": request_id} if request_id else {})}, ensure_ascii=False
                ),
            ),
            now,
            0.0,
        )
        self._turns.append(ChatMessage(ChatRole.USER, text))

    def replay(
        self,
        steps: Sequence[task_pb2.Step],
        *,
        pending: task_pb2.PendingAction | None = None,
        stop_reason: int = 0,
    ) -> None:
        """Rebuild the state from checkpointed steps: a resumed task continues where it stopped.

        A tool call issued but not checkpointed is issued again with the same
        step index, hence the same idempotency key: a KEYED tool does not run
        it twice. `pending` is the task's pending action when it is parked.
        """
        if self.steps or self._expect is not None:
            raise RuntimeError("replay needs a fresh machine")
        for position, original in enumerate(steps):
            if original.index != position:
                raise ValueError(
                    f"step {original.index} found at position {position}: checkpoints have a gap"
                )
            step = task_pb2.Step()
            step.CopyFrom(original)
            self.steps.append(step)
            self._replay(step)
        self.replayed = len(self.steps)
        if pending is not None and pending.action_id:
            if self._parked is None or self._parked.action_id != pending.action_id:
                raise ValueError(
                    f"pending action {echo(pending.action_id)} does not match the checkpointed steps"
                )
            reason = stop_reason or task_pb2.StopReason.ValueType(task_pb2.STOP_REASON_AWAITING_APPROVAL)
            self._outcome = parked_outcome(pending, task_pb2.StopReason.ValueType(reason))
        elif self._parked is not None and self._parked.call_id:
            # The attempt that parked on this call saved the step, then stopped before its
            # pause was stored: park again on the same action. Running the call now would
            # send it under a new step index, hence a new idempotency key.
            self._lost_pause = True
        elif self._parked is not None:
            self._parked = None  # an unanswered question whose pause was lost: ask the model again
        elif self._pending:
            self._inherited_call = self._pending[0].call_id

    def _replay(self, step: task_pb2.Step) -> None:
        usage = step.usage
        self.tally.iterations += usage.iterations
        self.tally.prompt_tokens += usage.prompt_tokens
        self.tally.completion_tokens += usage.completion_tokens
        self.tally.cost_usd += usage.cost_usd
        self.tally.tool_calls += usage.tool_calls
        record = json.loads(step.result_json) if step.result_json.startswith("{") else {}
        if step.kind == task_pb2.STEP_KIND_SANITIZE:
            self._sanitize_attempts += 1
            if step.status_code:
                self._sanitize_feedback = str(record.get("error", step.summary))
            else:
                self._intent = intent_text(record)
        elif step.kind == task_pb2.STEP_KIND_MODEL_CALL:
            if step.status_code == "MALFORMED_RESPONSE":
                self._malformed_streak += 1
                self._turns.append(_correction(str(record.get("error", ""))))
                return
            self._malformed_streak = 0
            calls = []
            for raw in record.get("tool_calls", []):
                text, arguments, error = parse_arguments(raw.get("arguments", ""))
                calls.append(
                    ToolCall(str(raw.get("id", "")), str(raw.get("name", "")), text, arguments, error)
                )
            self._turns.append(
                ChatMessage(ChatRole.ASSISTANT, str(record.get("content", "")), tool_calls=tuple(calls))
            )
            self._pending.extend(calls)
            if record.get("reply") == "input_required":
                self._parked = _Parked(f"act-{step.index}", task_pb2.PENDING_ACTION_KIND_INPUT, "")
        elif step.kind == task_pb2.STEP_KIND_USER_INPUT:
            self._parked = None
            self._turns.append(ChatMessage(ChatRole.USER, str(record.get("text", ""))))
        elif step.kind in (task_pb2.STEP_KIND_TOOL_CALL, task_pb2.STEP_KIND_DELEGATION):
            if not self._pending or self._pending[0].call_id != step.call_id:
                raise ValueError(
                    f"step {step.index} answers call {step.call_id!r}, which is not the next call"
                )
            call = self._pending.popleft()
            self._parked = None
            if step.outcome in (task_pb2.TOOL_OUTCOME_AWAITING_APPROVAL, task_pb2.TOOL_OUTCOME_UNKNOWN):
                kind = (
                    task_pb2.PENDING_ACTION_KIND_APPROVAL
                    if step.outcome == task_pb2.TOOL_OUTCOME_AWAITING_APPROVAL
                    else task_pb2.PENDING_ACTION_KIND_OUTCOME_UNKNOWN
                )
                self._pending.appendleft(call)
                self._parked = _Parked(f"act-{step.index}", kind, call.call_id)
                return
            self._turns.append(
                ChatMessage(ChatRole.TOOL, step.result_json, tool_call_id=call.call_id, name=call.name)
            )
            self._observations.append(_ObservationSlot(len(self._turns) - 1, step.result_json, step.summary))

    # -- events ------------------------------------------------------------

    def model_answered(self, turn: ModelTurn, *, started: float, duration: float) -> None:
        action = self._take(ModelCall)
        cost = self.pricing(
            turn.model or self.model_name, turn.usage.prompt_tokens, turn.usage.completion_tokens
        )
        self.tally.prompt_tokens += turn.usage.prompt_tokens
        self.tally.completion_tokens += turn.usage.completion_tokens
        self.tally.cost_usd += cost
        step_usage = task_pb2.Usage(
            iterations=0 if action.sanitize else 1,
            prompt_tokens=turn.usage.prompt_tokens,
            completion_tokens=turn.usage.completion_tokens,
            total_tokens=turn.usage.total_tokens,
            cost_usd=cost,
        )
        if action.sanitize:
            self._sanitized(turn, step_usage, started, duration)
            return
        self.tally.iterations += 1
        self._malformed_streak = 0
        record = {
            "model": turn.model,
            "scripted": turn.scripted,
            "content": turn.content,
            "tool_calls": [
                {"id": c.call_id, "name": c.name, "arguments": c.raw_arguments} for c in turn.tool_calls
            ],
        }
        if turn.reply != "task" and not turn.tool_calls:
            record["reply"] = turn.reply
        if turn.artifacts:
            record["artifacts"] = [a.artifact.artifact_id for a in turn.artifacts]
        if turn.tool_calls:
            names = ", ".join(c.name or "?" for c in turn.tool_calls[:4])
            more = "…" if len(turn.tool_calls) > 4 else ""
            plural = "s" if len(turn.tool_calls) != 1 else ""
            summary = f"{turn.model}: {len(turn.tool_calls)} tool call{plural} ({names}{more})"
        else:
            summary = f"{turn.model}: {_REPLY_SUMMARY[turn.reply]}"
        self._add_step(
            task_pb2.Step(
                kind=task_pb2.STEP_KIND_MODEL_CALL,
                summary=summary,
                result_json=json.dumps(record, ensure_ascii=False),
                usage=step_usage,
            ),
            started,
            duration,
        )
        if turn.artifacts:
            self._artifacts[len(self.steps) - 1] = list(turn.artifacts)
        if turn.tool_calls:
            self._turns.append(ChatMessage(ChatRole.ASSISTANT, turn.content, tool_calls=turn.tool_calls))
            self._pending.extend(turn.tool_calls)
            # A turn that overshot the token or cost cap is not acted upon.
            exhausted = budgets.over_spend(self.budget, self.tally)
            if exhausted is not None:
                self._finish(_budget_stop(exhausted, self.tally))
            return
        self._turns.append(ChatMessage(ChatRole.ASSISTANT, turn.content))
        self._finish(self._reply_outcome(turn, now=started + duration))

    def _reply_outcome(self, turn: ModelTurn, *, now: float) -> RunOutcome:
        """How a turn without tool calls ends the run: an answer, a question, or a refusal."""
        if turn.reply == "input_required":
            index = len(self.steps) - 1
            pending = task_pb2.PendingAction(
                action_id=f"act-{index}",
                kind=task_pb2.PENDING_ACTION_KIND_INPUT,
                message=turn.content[:2000],
                expire_time=timestamp(now + self.spec.approval_timeout.total_seconds()),
            )
            self._parked = _Parked(pending.action_id, pending.kind, "")
            return parked_outcome(pending, task_pb2.STOP_REASON_AWAITING_INPUT)
        if turn.reply == "reject":
            return RunOutcome(
                task_pb2.TASK_STATE_REJECTED,
                task_pb2.STOP_REASON_POLICY_DENIED,
                turn.content[:300],
                error=task_pb2.TaskError(reason=AGENT_REFUSED, message=turn.content[:300]),
            )
        message = "replied with a message" if turn.reply == "message" else "completed"
        return RunOutcome(
            task_pb2.TASK_STATE_COMPLETED,
            task_pb2.STOP_REASON_FINAL_ANSWER,
            message,
            final_answer=turn.content,
        )

    def model_failed(self, error: ModelError, *, started: float, duration: float) -> None:
        action = self._take(ModelCall)
        kind = task_pb2.STEP_KIND_SANITIZE if action.sanitize else task_pb2.STEP_KIND_MODEL_CALL
        text = f"{type(error).__name__}: {error.message}"
        if isinstance(error, MalformedResponse):
            # A malformed answer used a model turn; the model is told what was wrong.
            self._malformed_streak += 1
            if not action.sanitize:
                self.tally.iterations += 1
            self._add_step(
                task_pb2.Step(
                    kind=kind,
                    summary=f"unusable model answer: {error.message}"[:200],
                    result_json=json.dumps({"error": error.message}),
                    usage=task_pb2.Usage(iterations=0 if action.sanitize else 1),
                    status_code="MALFORMED_RESPONSE",
                ),
                started,
                duration,
            )
            if self._malformed_streak >= MAX_MALFORMED_STREAK:
                self._finish(
                    failure(
                        task_pb2.STOP_REASON_MODEL_ERROR,
                        error.reason,
                        f"the model gave {self._malformed_streak} unusable answers in a row: {error.message}",
                    )
                )
            elif action.sanitize:
                self._sanitize_attempts += 1
                self._sanitize_feedback = error.message
                self._check_sanitize_attempts()
            else:
                self._turns.append(_correction(error.message))
            return
        self._add_step(
            task_pb2.Step(kind=kind, summary=f"model call failed: {text}"[:200], status_code=error.reason),
            started,
            duration,
        )
        metadata = {"model": self.model_name}
        if error.status is not None:
            metadata["http_status"] = str(error.status)
        reason = error.reason
        what = "unavailable" if isinstance(error, ModelUnavailable) else "refused the request"
        self._finish(
            failure(
                task_pb2.STOP_REASON_MODEL_ERROR, reason, f"the model {what}: {error.message}", **metadata
            )
        )

    def tool_finished(self, result: ToolObservation, *, started: float, duration: float) -> None:
        action = self._take(ToolInvocation)
        self._pending.popleft()
        self._approved.pop(action.call.call_id, None)
        self.tally.tool_calls += result.attempts
        self._record_tool_step(action.call, action.offer, result, started, duration, counted=True)
        if result.artifacts:
            self._artifacts[len(self.steps) - 1] = list(result.artifacts)
        if result.outcome == task_pb2.TOOL_OUTCOME_AWAITING_APPROVAL:
            message = result.message or "the tool asks for a human approval"
            self._park(
                action.call,
                task_pb2.PENDING_ACTION_KIND_APPROVAL,
                task_pb2.STOP_REASON_AWAITING_APPROVAL,
                message,
                started + duration,
            )
        elif result.outcome == task_pb2.TOOL_OUTCOME_UNKNOWN:
            message = result.message or "the call may or may not have taken effect"
            self._park(
                action.call,
                task_pb2.PENDING_ACTION_KIND_OUTCOME_UNKNOWN,
                task_pb2.STOP_REASON_OUTCOME_UNKNOWN,
                message,
                started + duration,
            )

    # -- internals ---------------------------------------------------------

    def _issue(self, action: ModelCall | ToolInvocation) -> ModelCall | ToolInvocation:
        self._expect = action
        return action

    def _take(self, kind: type[Any]) -> Any:
        action = self._expect
        if not isinstance(action, kind):
            raise RuntimeError(f"no outstanding {kind.__name__} to answer")
        self._expect = None
        return action

    def _finish(self, outcome: RunOutcome) -> Finished:
        if self._outcome is None:
            self._outcome = outcome
        return Finished(self._outcome)

    def _add_step(self, step: task_pb2.Step, started: float, duration: float) -> None:
        step.index = len(self.steps)
        step.start_time.CopyFrom(timestamp(started))
        step.duration.CopyFrom(budgets.duration(max(0.0, duration)))
        self.steps.append(step)

    def _record_tool_step(
        self,
        call: ToolCall,
        offer: ToolOffer | None,
        result: ToolObservation,
        started: float,
        duration: float,
        *,
        counted: bool = False,
        announce: bool = False,
    ) -> None:
        content, summary = observation(
            call.name or "?",
            result,
            limit=self.spec.max_observation_bytes,
            available=sorted(self.offers) if result.outcome == task_pb2.TOOL_OUTCOME_DENIED else (),
        )
        kind = (
            task_pb2.STEP_KIND_DELEGATION
            if offer is not None and offer.is_agent
            else task_pb2.STEP_KIND_TOOL_CALL
        )
        self._add_step(
            task_pb2.Step(
                kind=kind,
                tool_name=call.name[:64],
                tool_version=result.version or (offer.version if offer else ""),
                arguments_json=call.raw_arguments,
                result_json=content,
                outcome=result.outcome,
                summary=summary,
                attempts=result.attempts,
                call_id=call.call_id,
                status_code=result.status_code,
                side_effect=offer.side_effect if offer is not None else 0,  # type: ignore[arg-type]
                usage=task_pb2.Usage(tool_calls=result.attempts if counted else 0),
            ),
            started,
            duration,
        )
        parked = result.outcome in (task_pb2.TOOL_OUTCOME_AWAITING_APPROVAL, task_pb2.TOOL_OUTCOME_UNKNOWN)
        if parked and not announce:
            return  # the model hears about it once a human decided
        self._turns.append(ChatMessage(ChatRole.TOOL, content, tool_call_id=call.call_id, name=call.name))
        self._observations.append(_ObservationSlot(len(self._turns) - 1, content, summary))

    def _park_for_approval(self, call: ToolCall, offer: ToolOffer, now: float, why: str) -> Finished:
        self._pending.popleft()
        result = ToolObservation(outcome=task_pb2.TOOL_OUTCOME_AWAITING_APPROVAL, message=why, attempts=0)
        self._record_tool_step(call, offer, result, now, 0.0)
        return self._park(
            call, task_pb2.PENDING_ACTION_KIND_APPROVAL, task_pb2.STOP_REASON_AWAITING_APPROVAL, why, now
        )

    def _park_again(self, now: float) -> Finished:
        parked, step = self._parked, self.steps[-1]
        assert parked is not None and self._pending and self._pending[0].call_id == parked.call_id
        self._lost_pause = False
        stop = (
            task_pb2.STOP_REASON_OUTCOME_UNKNOWN
            if parked.kind == task_pb2.PENDING_ACTION_KIND_OUTCOME_UNKNOWN
            else task_pb2.STOP_REASON_AWAITING_APPROVAL
        )
        return self._park(self._pending.popleft(), parked.kind, stop, step.summary, now)

    def _park(
        self,
        call: ToolCall,
        kind: task_pb2.PendingActionKind.ValueType,
        stop_reason: task_pb2.StopReason.ValueType,
        message: str,
        now: float,
    ) -> Finished:
        index = len(self.steps) - 1
        pending = task_pb2.PendingAction(
            action_id=f"act-{index}",
            kind=kind,
            tool_name=call.name,
            arguments_json=call.raw_arguments,
            message=message,
            expire_time=timestamp(now + self.spec.approval_timeout.total_seconds()),
            required_scope=f"{self.spec.slug}:approve",
        )
        self._pending.appendleft(call)  # the call waits at the head of the queue for the decision
        self._parked = _Parked(pending.action_id, kind, call.call_id)
        return self._finish(parked_outcome(pending, stop_reason))

    # -- requests --------------------------------------------------------------

    def _system_prompt(self) -> str:
        return self.spec.system_prompt.strip()

    def _history(self) -> list[ChatMessage]:
        """This task's turns, with old observations folded into summaries when they grow large."""
        turns = list(self._turns)
        budget = HISTORY_BUDGET_FACTOR * self.spec.max_observation_bytes
        sizes = [len(slot.content) for slot in self._observations]
        keep = len(sizes)
        while keep > 1 and sum(sizes[len(sizes) - keep :]) > budget:
            keep -= 1
        if keep < len(sizes):
            contents = compact_history(
                [s.content for s in self._observations], [s.summary for s in self._observations], keep
            )
            for slot, content in zip(self._observations, contents, strict=True):
                old = turns[slot.position]
                turns[slot.position] = ChatMessage(
                    ChatRole.TOOL, content, tool_call_id=old.tool_call_id, name=old.name
                )
        return turns

    def _act_request(self) -> ChatRequest:
        assert self._intent is not None
        messages = [
            ChatMessage(ChatRole.SYSTEM, self._system_prompt()),
            *self.task.context,
            ChatMessage(ChatRole.USER, self._intent),
            *self._history(),
        ]
        remaining = max(1, self.budget.token_cap - self.tally.total_tokens)
        return ChatRequest(
            messages=messages,
            tools=self.tool_definitions(),
            temperature=self.spec.model.temperature,
            max_tokens=min(self.spec.model.max_tokens, remaining),
            headers=self.headers,
        )

    def _sanitize_request(self) -> ChatRequest:
        assert self.spec.sanitizer is not None
        return sanitize_request(
            self.spec.sanitizer, self.task.instruction, self._sanitize_feedback, self.headers
        )

    def _sanitized(self, turn: ModelTurn, usage: task_pb2.Usage, started: float, duration: float) -> None:
        sanitizer = self.spec.sanitizer
        assert sanitizer is not None
        self._sanitize_attempts += 1
        intent, problem = parse_intent(turn.content, sanitizer.output_schema)
        self._add_step(
            task_pb2.Step(
                kind=task_pb2.STEP_KIND_SANITIZE,
                summary=(
                    "sanitized input into structured intent"
                    if problem is None
                    else f"sanitizer output rejected: {problem}"
                )[:200],
                result_json=json.dumps(intent) if intent is not None else "",
                usage=usage,
                status_code="" if problem is None else "INVALID_INTENT",
            ),
            started,
            duration,
        )
        if intent is not None:
            self._intent = intent_text(intent)
            return
        self._sanitize_feedback = problem or "invalid output"
        self._check_sanitize_attempts()

    def _check_sanitize_attempts(self) -> None:
        if self._sanitize_attempts >= SANITIZE_ATTEMPTS and self._outcome is None:
            message = f"the sanitizer could not extract a valid request: {self._sanitize_feedback}"
            self._finish(
                RunOutcome(
                    task_pb2.TASK_STATE_REJECTED,
                    task_pb2.STOP_REASON_POLICY_DENIED,
                    message[:300],
                    error=task_pb2.TaskError(reason="INVALID_REQUEST", message=message[:300]),
                )
            )


def reply_of(steps: Sequence[task_pb2.Step]) -> Reply:
    """How the model's last turn was meant (`message`: a direct message reply), from the steps."""
    for step in reversed(steps):
        if step.kind == task_pb2.STEP_KIND_MODEL_CALL:
            record = json.loads(step.result_json) if step.result_json.startswith("{") else {}
            reply = record.get("reply", "task")
            return reply if reply in REPLIES else "task"
    return "task"


def _correction(problem: str) -> ChatMessage:
    return ChatMessage(
        ChatRole.USER,
        f"{CORRECTION_PREFIX}Your previous reply could not be used ({problem}). "
        "Reply with tool calls or with a final answer.",
    )

"""The side effects a task's checkpointed steps record (pure).

What an operator must know about a failed or dead-lettered task before redriving it
(`agentmesh tasks dead-letters show`): every call of a tool that is not READ_ONLY and
that completed (OK, or deduplicated: the effect happened once, earlier), whose outcome
is unknown, or that the model asked for but whose result was never checkpointed (the
worker died in between: the call may have run). Each with the tool, a digest of its
arguments, a one-line result and the idempotency key a redrive will send again (the
same one: `<task id>:<step index>`), and, when the runtime compensated it
(agents.compensation), how that went.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from agentmesh.v1 import task_pb2, tool_options_pb2

MAX_RESULT_CHARS = 160

# Effect.status
COMPLETED = "completed"
IN_DOUBT = "in doubt"
COMPENSATED = "compensated"
COMPENSATION_FAILED = "compensation failed"

_DONE = (task_pb2.TOOL_OUTCOME_OK, task_pb2.TOOL_OUTCOME_DEDUPLICATED)
_CALLS = (task_pb2.STEP_KIND_TOOL_CALL, task_pb2.STEP_KIND_DELEGATION)


@dataclass(frozen=True, slots=True)
class Effect:
    step: int  # the step index; for a call never checkpointed, the index its result would have had
    tool: str
    side_effect: str  # KEYED, IDEMPOTENT, NON_IDEMPOTENT, UNSPECIFIED, or "" (not recorded)
    status: str  # completed | in doubt | compensated | compensation failed
    arguments_sha256: str  # SHA-256 (hex) of the arguments as canonical JSON (sorted keys)
    result: str  # one line: what the tool answered (bounded), or why the outcome is in doubt
    idempotency_key: str
    version: str = ""
    compensation: str = ""  # "inventory_release at step 9: OK"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def json_arguments_digest(arguments_json: str) -> str:
    """SHA-256 (hex) of a call's arguments as canonical JSON (what the model sent, if not JSON)."""
    try:
        canonical = json.dumps(json.loads(arguments_json), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = arguments_json
    return hashlib.sha256(canonical.encode()).hexdigest()


def side_effect_name(value: int) -> str:
    return tool_options_pb2.SideEffect.Name(value).removeprefix("SIDE_EFFECT_")  # type: ignore[arg-type]


def result_line(step: task_pb2.Step) -> str:
    """The tool's answer (the `result` of its observation) as one bounded line, else the summary."""
    try:
        body = json.loads(step.result_json) if step.result_json else {}
    except ValueError:
        body = {}
    shown = body.get("result", body.get("result_preview")) if isinstance(body, dict) else None
    text = json.dumps(shown, separators=(",", ":"), ensure_ascii=False) if shown is not None else step.summary
    return text if len(text) <= MAX_RESULT_CHARS else text[: MAX_RESULT_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class UnansweredCall:
    """A call a checkpointed model turn asked for whose result was never checkpointed."""

    index: int  # the step its result would have been: its idempotency key is `<task id>:<index>`
    tool: str
    arguments_json: str
    call_id: str


def unanswered_calls(steps: list[task_pb2.Step]) -> list[UnansweredCall]:
    """Calls checkpointed model turns asked for with no checkpointed result: the worker stopped
    before (or while) making them, so each may or may not have run. The first would be the step
    after the last non-compensation step on resumption (compensations are always the last steps:
    a compensated task never resumes), so its index is the key it was (or would be) sent with."""
    answered = {s.call_id for s in steps if s.kind in _CALLS and s.call_id}
    next_index = sum(1 for s in steps if s.kind != task_pb2.STEP_KIND_COMPENSATION)
    found: list[UnansweredCall] = []
    for step in steps:
        if step.kind != task_pb2.STEP_KIND_MODEL_CALL:
            continue
        try:
            record = json.loads(step.result_json) if step.result_json.startswith("{") else {}
        except ValueError:
            continue
        for call in record.get("tool_calls", []) if isinstance(record, dict) else []:
            if not isinstance(call, dict) or str(call.get("id", "")) in answered:
                continue
            raw = call.get("arguments", "")
            arguments = raw if isinstance(raw, str) else json.dumps(raw, separators=(",", ":"))
            found.append(
                UnansweredCall(
                    next_index + len(found), str(call.get("name", "")), arguments, str(call.get("id", ""))
                )
            )
    return found


def task_effects(task_id: str, steps: list[task_pb2.Step]) -> list[Effect]:
    """The side effects recorded by `steps` (in step order), with their compensations."""
    compensations = {s.compensated_step: s for s in steps if s.kind == task_pb2.STEP_KIND_COMPENSATION}
    effects: list[Effect] = []
    for step in steps:
        if step.kind not in _CALLS or step.side_effect == tool_options_pb2.SIDE_EFFECT_READ_ONLY:
            continue
        if step.outcome in _DONE:
            status = COMPLETED
        elif step.outcome == task_pb2.TOOL_OUTCOME_UNKNOWN:
            status = IN_DOUBT
        else:
            continue
        status, compensation = _compensation(status, compensations.get(step.index))
        effects.append(
            Effect(
                step=step.index,
                tool=step.tool_name,
                version=step.tool_version,
                side_effect=side_effect_name(step.side_effect),
                status=status,
                arguments_sha256=json_arguments_digest(step.arguments_json),
                result=result_line(step),
                idempotency_key=f"{task_id}:{step.index}",
                compensation=compensation,
            )
        )
    for call in unanswered_calls(steps):
        status, compensation = _compensation(IN_DOUBT, compensations.get(call.index))
        effects.append(
            Effect(
                step=call.index,
                tool=call.tool,
                side_effect="",
                status=status,
                arguments_sha256=json_arguments_digest(call.arguments_json),
                result="asked for by the model; no result was checkpointed (it may have run)",
                idempotency_key=f"{task_id}:{call.index}",
                compensation=compensation,
            )
        )
    return effects


def _compensation(status: str, undo: task_pb2.Step | None) -> tuple[str, str]:
    """The effect's status once its compensation (if any) is counted, and how that went."""
    if undo is None:
        return status, ""
    ok = undo.outcome in _DONE
    return (
        COMPENSATED if ok else COMPENSATION_FAILED
    ), f"{undo.tool_name} at step {undo.index}: {undo.summary}"

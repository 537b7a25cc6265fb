"""What the model is shown after a tool call: compact, structured, bounded (pure).

Every observation is a small JSON object with a `status` (`OK`, a gRPC code
name such as `INVALID_ARGUMENT`, `DENIED`, `OUTCOME_UNKNOWN`,
`AWAITING_APPROVAL`): the result, or a summary of the error with the field
violations and a hint. Nothing raw reaches the model: results are cut to the
domain's `max_observation_bytes`, error texts to one line of at most
`MAX_ERROR_CHARS`, HTML error pages and tracebacks are recognised and
replaced by a sentence, at most `MAX_VIOLATIONS` violations are listed. Older
observations in a long task are folded into their one-line summaries
(`compact_history`), so the prompt stays bounded however long the model loops.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from agentmesh.v1 import task_pb2

MAX_ERROR_CHARS = 300
MAX_VIOLATIONS = 10
MAX_FIELD_CHARS = 120
_WHITESPACE = re.compile(r"\s+")
_HTML = re.compile(r"<\s*(!doctype|html|head|body|title)\b", re.IGNORECASE)
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s+at [\w.$]+\(", re.MULTILINE)

ToolOutcomeValue: TypeAlias = task_pb2.ToolOutcome.ValueType


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    description: str


@dataclass(frozen=True, slots=True)
class ToolObservation:
    """How one tool call ended, as the runner records and shows it.

    `result` is the tool's answer as JSON data (OK, DEDUPLICATED). For errors,
    `status_code` is the gRPC code name, `reason` the ErrorInfo reason and
    `message` the status message; `violations` come from BadRequest details.
    """

    outcome: ToolOutcomeValue
    result: Any = None
    status_code: str = ""
    reason: str = ""
    message: str = ""
    violations: tuple[Violation, ...] = ()
    attempts: int = 1
    version: str = ""
    retryable: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Outputs the tool returned (its response's agentmesh.v1.Artifact fields, a delegated agent's
    # artifacts): artifacts of the task, saved with the tool's step.
    artifacts: tuple[task_pb2.ArtifactUpdate, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome in (task_pb2.TOOL_OUTCOME_OK, task_pb2.TOOL_OUTCOME_DEDUPLICATED)


def clean_error_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """One line, no markup, no stack trace, at most `limit` characters."""
    if not text:
        return ""
    if _HTML.search(text):
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        shown = f" ({_WHITESPACE.sub(' ', title.group(1)).strip()[:80]})" if title else ""
        return f"the service answered with an HTML error page{shown}"
    if _TRACEBACK.search(text):
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        text = f"{last} (stack trace omitted)"
    line = _WHITESPACE.sub(" ", text).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _bounded_result(result: Any, limit: int) -> dict[str, Any]:
    text = _dumps(result)
    size = len(text.encode())
    if size <= limit:
        return {"status": "OK", "result": result}
    body: dict[str, Any] = {"status": "OK", "truncated": True, "result_preview": "", "note": ""}
    body["note"] = f"result was {size} bytes; only the first part is shown"
    cut = max(0, limit - 160)
    while True:  # escaping can grow the preview; shrink until the whole observation fits
        body["result_preview"] = text.encode()[:cut].decode(errors="ignore")
        if len(_dumps(body).encode()) <= limit or cut == 0:
            return body
        cut = cut * 3 // 4


def observation(
    call_name: str, result: ToolObservation, *, limit: int, available: Sequence[str] = ()
) -> tuple[str, str]:
    """(JSON text shown to the model, one-line summary for the step record)."""
    outcome = result.outcome
    body: dict[str, Any]
    if result.ok:
        body = _bounded_result(result.result, limit)
        if outcome == task_pb2.TOOL_OUTCOME_DEDUPLICATED:
            body["deduplicated"] = True
        summary = f"{call_name}: OK" + (
            " (deduplicated)" if outcome == task_pb2.TOOL_OUTCOME_DEDUPLICATED else ""
        )
        return _dumps(body), summary
    message = clean_error_text(result.message)
    if outcome == task_pb2.TOOL_OUTCOME_DENIED:
        body = {"status": "DENIED", "error": message or f"tool {call_name!r} is not available to this agent"}
        if available:
            body["available_tools"] = list(available)
        return _dumps(body), f"{call_name}: denied ({message})" if message else f"{call_name}: denied"
    if outcome == task_pb2.TOOL_OUTCOME_INVALID_ARGUMENTS:
        body = {
            "status": "INVALID_ARGUMENT",
            "error": message or "the arguments do not match the tool's schema",
        }
        if result.violations:
            body["violations"] = [
                {
                    "field": clean_error_text(v.field, MAX_FIELD_CHARS),
                    "problem": clean_error_text(v.description, MAX_FIELD_CHARS),
                }
                for v in result.violations[:MAX_VIOLATIONS]
            ]
            if len(result.violations) > MAX_VIOLATIONS:
                body["more_violations"] = len(result.violations) - MAX_VIOLATIONS
        body["hint"] = "Fix the arguments to match the tool's parameters schema and call the tool again."
        first = result.violations[0] if result.violations else None
        detail = f"{first.field}: {first.description}" if first else message
        return _dumps(body), clean_error_text(f"{call_name}: invalid arguments ({detail})", 200)
    if outcome == task_pb2.TOOL_OUTCOME_AWAITING_APPROVAL:
        body = {"status": "AWAITING_APPROVAL", "message": message or "a human must approve this call"}
        return _dumps(body), f"{call_name}: waiting for approval"
    if outcome == task_pb2.TOOL_OUTCOME_REJECTED:
        body = {
            "status": "REJECTED",
            "error": message or "a human rejected this call; it was not made",
            "hint": "Do not retry this call; explain the outcome to the user.",
        }
        return _dumps(body), f"{call_name}: approval rejected"
    if outcome == task_pb2.TOOL_OUTCOME_UNKNOWN:
        body = {
            "status": "OUTCOME_UNKNOWN",
            "error": message or "the call may or may not have taken effect",
            "hint": "Do not repeat this call.",
        }
        return _dumps(body), f"{call_name}: outcome unknown"
    code = result.status_code or "ERROR"
    body = {"status": code}
    if result.reason:
        body["reason"] = result.reason
    body["error"] = message or "the tool failed"
    if result.violations:
        body["violations"] = [
            {"field": v.field[:MAX_FIELD_CHARS], "problem": clean_error_text(v.description, MAX_FIELD_CHARS)}
            for v in result.violations[:MAX_VIOLATIONS]
        ]
    body["hint"] = _hint(code, result.retryable)
    return _dumps(body), clean_error_text(f"{call_name}: {code}" + (f" ({message})" if message else ""), 200)


def _hint(code: str, retryable: bool) -> str:
    if code in {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}:
        return (
            "The runtime already retried this call. Try again later, use another tool, or explain "
            "the problem to the user."
        )
    if code == "FAILED_PRECONDITION":
        return "The call is not allowed in the current state; read the error and change your plan."
    if code in {"NOT_FOUND", "INVALID_ARGUMENT", "OUT_OF_RANGE"}:
        return "Check the values you passed (ids, amounts) and call again with corrected arguments."
    if code in {"PERMISSION_DENIED", "UNAUTHENTICATED"}:
        return "The user is not allowed to do this; do not retry, explain it to the user."
    return "Do not repeat the same call unchanged; explain the problem or try another approach."


def denied(message: str) -> ToolObservation:
    return ToolObservation(outcome=task_pb2.TOOL_OUTCOME_DENIED, message=message, attempts=0)


def invalid_arguments(message: str, violations: Sequence[Violation] = ()) -> ToolObservation:
    return ToolObservation(
        outcome=task_pb2.TOOL_OUTCOME_INVALID_ARGUMENTS,
        message=message,
        violations=tuple(violations),
        attempts=0,
        status_code="INVALID_ARGUMENT",
    )


def delegation_result(run_response: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a delegated agent's RunResponse (JSON) the calling model needs."""
    task = run_response.get("task", run_response)
    if not isinstance(task, Mapping):
        return {"task": str(task)[:MAX_ERROR_CHARS]}
    kept: dict[str, Any] = {
        "agent": task.get("domain", ""),
        "task_id": task.get("taskId", task.get("task_id", "")),
        "state": str(task.get("state", "")).removeprefix("TASK_STATE_"),
    }
    for source, target in (("finalAnswer", "final_answer"), ("final_answer", "final_answer")):
        if task.get(source):
            kept[target] = task[source]
    stop = task.get("stopReason", task.get("stop_reason"))
    if stop:
        kept["stop_reason"] = str(stop).removeprefix("STOP_REASON_")
    status = task.get("statusMessage", task.get("status_message"))
    if status:
        kept["status_message"] = clean_error_text(str(status))
    pending = task.get("pendingAction", task.get("pending_action"))
    if isinstance(pending, Mapping) and pending.get("message"):
        kept["pending"] = clean_error_text(str(pending["message"]))
    return kept


def compact_history(contents: Sequence[str], summaries: Sequence[str], keep_recent: int) -> list[str]:
    """Observation texts with all but the newest `keep_recent` replaced by their summaries."""
    cut = max(0, len(contents) - keep_recent)
    return [
        _dumps({"status": "COMPACTED", "summary": summaries[i]}) if i < cut else contents[i]
        for i in range(len(contents))
    ]

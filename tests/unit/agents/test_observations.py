"""Observations fed back to the model stay compact and structured, whatever the tool sent."""

from __future__ import annotations

import json

from agentmesh.v1 import task_pb2
from agents.observations import (
    MAX_ERROR_CHARS,
    MAX_VIOLATIONS,
    ToolObservation,
    Violation,
    clean_error_text,
    compact_history,
    delegation_result,
    observation,
)


def shown(result: ToolObservation, limit: int = 4096) -> dict[str, object]:
    text, _ = observation("payments_refund", result, limit=limit)
    assert len(text.encode()) <= max(limit, 2048)
    decoded = json.loads(text)
    assert isinstance(decoded, dict)
    return decoded


def test_ok_result_is_shown_whole_when_small() -> None:
    body = shown(ToolObservation(task_pb2.TOOL_OUTCOME_OK, result={"refund_id": "R-1"}))
    assert body == {"status": "OK", "result": {"refund_id": "R-1"}}


def test_large_result_is_truncated_within_the_limit() -> None:
    text, summary = observation(
        "crm_list", ToolObservation(task_pb2.TOOL_OUTCOME_OK, result={"rows": ["x" * 100] * 1000}), limit=1024
    )
    body = json.loads(text)
    assert len(text.encode()) <= 1024 and body["truncated"] is True and "103010 bytes" in body["note"]
    assert summary == "crm_list: OK"


def test_truncation_fits_even_when_escaping_doubles_the_size() -> None:
    text, _ = observation("t", ToolObservation(task_pb2.TOOL_OUTCOME_OK, result=['"\\'] * 5000), limit=512)
    assert len(text.encode()) <= 512


def test_invalid_arguments_list_violations_with_a_hint() -> None:
    violations = tuple(Violation(f"items[{i}].qty", "must be greater than 0") for i in range(25))
    body = shown(
        ToolObservation(
            task_pb2.TOOL_OUTCOME_INVALID_ARGUMENTS,
            message="bad",
            violations=violations,
            status_code="INVALID_ARGUMENT",
        )
    )
    assert body["status"] == "INVALID_ARGUMENT"
    assert isinstance(body["violations"], list) and len(body["violations"]) == MAX_VIOLATIONS
    assert body["more_violations"] == 15 and "Fix the arguments" in str(body["hint"])


def test_html_error_pages_and_tracebacks_never_reach_the_model() -> None:
    html = (
        "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
        + "x" * 10_000
        + "</body></html>"
    )
    assert clean_error_text(html) == "the service answered with an HTML error page (502 Bad Gateway)"
    trace = (
        'Traceback (most recent call last):\n  File "a.py", line 1\n    boom()\n'
        "ValueError: currency EUR unsupported"
    )
    assert clean_error_text(trace) == "ValueError: currency EUR unsupported (stack trace omitted)"
    long = clean_error_text("word " * 1000)
    assert len(long) == MAX_ERROR_CHARS and long.endswith("…")


def test_tool_error_keeps_code_reason_and_a_hint() -> None:
    body = shown(
        ToolObservation(
            task_pb2.TOOL_OUTCOME_ERROR,
            status_code="UNAVAILABLE",
            reason="DEPENDENCY_UNAVAILABLE",
            message="gateway\n\n  down",
            attempts=3,
        )
    )
    assert body["status"] == "UNAVAILABLE" and body["reason"] == "DEPENDENCY_UNAVAILABLE"
    assert body["error"] == "gateway down" and "already retried" in str(body["hint"])


def test_denied_lists_available_tools() -> None:
    text, summary = observation(
        "drop_tables",
        ToolObservation(task_pb2.TOOL_OUTCOME_DENIED, message="not allowed"),
        limit=4096,
        available=["a", "b"],
    )
    assert json.loads(text)["available_tools"] == ["a", "b"] and summary.startswith("drop_tables: denied")


def test_unknown_outcome_says_do_not_repeat() -> None:
    assert "Do not repeat" in str(shown(ToolObservation(task_pb2.TOOL_OUTCOME_UNKNOWN))["hint"])


def test_deduplicated_is_an_ok_result_marked_as_such() -> None:
    body = shown(ToolObservation(task_pb2.TOOL_OUTCOME_DEDUPLICATED, result={"id": 1}))
    assert body["status"] == "OK" and body["deduplicated"] is True


def test_delegation_result_keeps_what_the_caller_needs() -> None:
    response = {
        "task": {
            "taskId": "t-1",
            "domain": "fulfillment",
            "state": "TASK_STATE_COMPLETED",
            "finalAnswer": "shipped",
            "stopReason": "STOP_REASON_FINAL_ANSWER",
            "steps": [{"index": 0}] * 50,
            "usage": {"totalTokens": "100"},
        }
    }
    assert delegation_result(response) == {
        "agent": "fulfillment",
        "task_id": "t-1",
        "state": "COMPLETED",
        "final_answer": "shipped",
        "stop_reason": "FINAL_ANSWER",
    }


def test_compact_history_keeps_the_newest_whole() -> None:
    compacted = compact_history(["a", "b", "c"], ["sa", "sb", "sc"], keep_recent=1)
    assert [json.loads(x)["summary"] for x in compacted[:2]] == ["sa", "sb"] and compacted[2] == "c"

"""Compensations (pure parts): the spec's declaration, which completed steps are owed one, the
arguments built from JSON Pointers, and the failure each compensation records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentmesh.v1 import task_pb2, tool_options_pb2
from agents.compensation import Failure, failure_of, plan, resolve_pointer
from agents.spec import SpecError, parse_spec

RESERVE = {
    "name": "inventory_reserve",
    "compensation": {"tool": "inventory_release", "arguments": {"reservation_id": "/result/reservation_id"}},
}


def spec(*tools: dict[str, Any]) -> Any:
    return parse_spec(
        {
            "slug": "fulfillment",
            "display_name": "F",
            "description": "F.",
            "system_prompt": "F.",
            "tools": list(tools) or [RESERVE, {"name": "email_send"}],
        }
    )


def call(
    index: int, tool: str, result: Any, outcome: int = task_pb2.TOOL_OUTCOME_OK, **args: Any
) -> task_pb2.Step:
    return task_pb2.Step(
        index=index,
        kind=task_pb2.STEP_KIND_TOOL_CALL,
        tool_name=tool,
        arguments_json=json.dumps(args),
        result_json=json.dumps({"status": "OK", "result": result}),
        outcome=outcome,  # type: ignore[arg-type]
        side_effect=tool_options_pb2.SIDE_EFFECT_KEYED,
    )


def test_completed_calls_are_compensated_newest_first_with_arguments_from_their_results() -> None:
    steps = [
        task_pb2.Step(index=0, kind=task_pb2.STEP_KIND_MODEL_CALL),
        call(1, "inventory_reserve", {"reservation_id": "res_1"}, sku="ABC-001"),
        call(2, "email_send", {"id": "m1"}),  # no compensation declared
        call(3, "inventory_reserve", {"reservation_id": "res_2"}, outcome=task_pb2.TOOL_OUTCOME_DEDUPLICATED),
        call(4, "inventory_reserve", None, outcome=task_pb2.TOOL_OUTCOME_ERROR),  # no effect
    ]
    owed = plan(spec(), steps)
    assert [(p.undoes.index, p.tool, p.arguments) for p in owed] == [
        (3, "inventory_release", {"reservation_id": "res_2"}),
        (1, "inventory_release", {"reservation_id": "res_1"}),
    ]
    done = task_pb2.Step(index=5, kind=task_pb2.STEP_KIND_COMPENSATION, compensated_step=3)
    assert [p.undoes.index for p in plan(spec(), [*steps, done])] == [1]  # never twice


def test_without_an_argument_map_the_original_arguments_are_sent() -> None:
    tool = {"name": "inventory_reserve", "compensation": {"tool": "inventory_release"}}
    [owed] = plan(spec(tool), [call(1, "inventory_reserve", {}, sku="ABC-001", qty=2)])
    assert owed.arguments == {"sku": "ABC-001", "qty": 2} and owed.problem == ""


def test_a_pointer_that_finds_nothing_plans_a_failed_compensation() -> None:
    truncated = call(1, "inventory_reserve", None)
    truncated.result_json = json.dumps({"status": "OK", "truncated": True, "result_preview": "{"})
    [owed] = plan(spec(), [truncated])
    assert owed.arguments is None and "/result/reservation_id" in owed.problem


IN_DOUBT = {
    **RESERVE,
    "compensation": {
        **RESERVE["compensation"],  # type: ignore[dict-item]
        "in_doubt": {"tool": "inventory_release_reserved", "arguments": {"reserve_key": "/idempotency_key"}},
    },
}


def model(index: int, *calls: tuple[str, str, dict[str, Any]]) -> task_pb2.Step:
    record = {"tool_calls": [{"id": i, "name": n, "arguments": json.dumps(a)} for i, n, a in calls]}
    return task_pb2.Step(index=index, kind=task_pb2.STEP_KIND_MODEL_CALL, result_json=json.dumps(record))


def test_calls_in_doubt_are_compensated_only_when_the_compensation_declares_in_doubt() -> None:
    # Step 1: a reservation whose outcome is unknown. Step 4's turn asked for a reservation and an
    # email and the worker died after sending the first: never answered, it would be step 5 (its
    # key t:5); the email (step 6) has no compensation.
    steps = [
        model(0, ("c1", "inventory_reserve", {"sku": "ABC-001"})),
        call(1, "inventory_reserve", None, outcome=task_pb2.TOOL_OUTCOME_UNKNOWN, sku="ABC-001"),
        model(2, ("c2", "inventory_reserve", {"sku": "DEF-002"})),
        call(3, "inventory_reserve", {"reservation_id": "res_7"}, sku="DEF-002"),
        model(4, ("c3", "inventory_reserve", {"sku": "XYZ-900"}), ("c4", "email_send", {})),
    ]
    steps[1].call_id, steps[3].call_id = "c1", "c2"
    owed = plan(spec(IN_DOUBT, {"name": "email_send"}), steps, "t")
    assert [(p.undoes.index, p.tool, p.arguments, p.in_doubt) for p in owed] == [
        (5, "inventory_release_reserved", {"reserve_key": "t:5"}, True),  # c3: asked, never answered
        (3, "inventory_release", {"reservation_id": "res_7"}, False),
        (1, "inventory_release_reserved", {"reserve_key": "t:1"}, True),
    ]
    # Without `in_doubt` they stay listed as in doubt, uncompensated.
    assert [p.undoes.index for p in plan(spec(), steps, "t")] == [3]
    # Compensated once, never again (the in-doubt one by the index its key names).
    done = task_pb2.Step(index=5, kind=task_pb2.STEP_KIND_COMPENSATION, compensated_step=5)
    again = plan(spec(IN_DOUBT, {"name": "email_send"}), [*steps, done], "t")
    assert [p.undoes.index for p in again] == [3, 1]


def test_in_doubt_arguments_come_from_the_call_and_its_key_never_a_result() -> None:
    tool = {
        "name": "x_do",
        "compensation": {
            "tool": "x_undo",
            "in_doubt": {
                "tool": "x_undo_if_done",
                "arguments": {"key": "/idempotency_key", "a": "/arguments/a"},
            },
        },
    }
    [owed] = plan(spec(tool), [call(0, "x_do", None, outcome=task_pb2.TOOL_OUTCOME_UNKNOWN, a=7)], "t")
    assert owed.arguments == {"key": "t:0", "a": 7}
    [missing] = plan(spec(tool), [call(0, "x_do", None, outcome=task_pb2.TOOL_OUTCOME_UNKNOWN)], "t")
    assert missing.arguments is None and "/arguments/a" in missing.problem
    with pytest.raises(SpecError, match="neither a JSON Pointer under /arguments nor /idempotency_key"):
        spec(
            {
                "name": "x_do",
                "compensation": {
                    "tool": "x_undo",
                    "in_doubt": {"tool": "y", "arguments": {"a": "/result/a"}},
                },
            }
        )


def test_json_pointers() -> None:
    document = {"result": {"a/b": [1, {"c~d": 2}]}}
    assert resolve_pointer(document, "/result/a~1b/1/c~0d") == (True, 2)
    assert resolve_pointer(document, "/result/a~1b/5") == (False, None)
    assert resolve_pointer(document, "/arguments/x") == (False, None)


def test_the_recorded_failure_round_trips() -> None:
    failure = Failure(
        task_pb2.STOP_REASON_MAX_TOOL_CALLS,
        task_pb2.TaskError(reason="BUDGET_EXHAUSTED", message="24 tool calls", metadata={"limit": "tools"}),
        "stopped: tool calls",
    )
    step = task_pb2.Step(result_json=json.dumps({"status": "OK", "task_failure": failure.as_dict()}))
    assert failure_of(step) == failure
    assert failure_of(task_pb2.Step(result_json="{}")) is None


@pytest.mark.parametrize(
    ("tool", "problem"),
    [
        ({"name": "agent_refunds", "compensation": {"tool": "x_undo"}}, "a delegation cannot be compensated"),
        ({"name": "x_do", "compensation": {"tool": "x_do"}}, "a tool cannot compensate itself"),
        (
            {"name": "x_do", "compensation": {"tool": "agent_refunds"}},
            "an agent cannot be a compensating tool",
        ),
        (
            {"name": "x_do", "compensation": {"tool": "x_undo", "arguments": {"a": "result/id"}}},
            "JSON Pointer",
        ),
        (
            {"name": "x_do", "compensation": {"tool": "x_undo", "arguments": {"a": "/other/id"}}},
            "JSON Pointer",
        ),
        ({"name": "x_do", "compensation": {"tool": "x_undo", "version": "two"}}, "version range"),
    ],
)
def test_bad_compensation_declarations_are_refused(tool: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        spec(tool)

"""Request limits against the domain's caps, and the budget checks."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from agentmesh.kit.errors import InvalidArgument
from agentmesh.v1 import task_pb2
from agents.limits import (
    Budget,
    Tally,
    before_model_call,
    before_tool_call,
    deadline_passed,
    effective_budget,
)
from agents.spec import parse_spec

SPEC = parse_spec(
    {
        "slug": "fulfillment",
        "display_name": "F",
        "description": "d",
        "system_prompt": "p",
        "caps": {
            "max_iterations": 12,
            "token_cap": 16384,
            "max_tool_calls": 24,
            "deadline": "120s",
            "max_cost_usd": 0.5,
        },
        "defaults": {
            "max_iterations": 8,
            "token_cap": 8000,
            "max_tool_calls": 10,
            "deadline": "60s",
            "max_cost_usd": 0.1,
        },
    }
)


def test_unset_limits_take_the_defaults() -> None:
    budget = effective_budget(SPEC, task_pb2.Limits())
    assert budget == Budget(8, 8000, 10, 60.0, 0.1)


def test_lower_limits_are_kept() -> None:
    budget = effective_budget(
        SPEC, task_pb2.Limits(max_iterations=3, deadline=duration_pb2.Duration(seconds=5), max_cost_usd=0.01)
    )
    assert (budget.max_iterations, budget.deadline_s, budget.max_cost_usd, budget.token_cap) == (
        3,
        5.0,
        0.01,
        8000,
    )


def test_limit_above_cap_names_the_cap() -> None:
    with pytest.raises(InvalidArgument) as caught:
        effective_budget(SPEC, task_pb2.Limits(max_iterations=13, token_cap=20000))
    error = caught.value
    assert error.reason == "LIMIT_ABOVE_CAP"
    assert error.metadata == {"cap": "max_iterations", "max": "12"}
    assert [v.field for v in error.violations] == ["limits.max_iterations", "limits.token_cap"]
    assert "cap is 12" in error.violations[0].description


def test_deadline_above_cap() -> None:
    with pytest.raises(InvalidArgument) as caught:
        effective_budget(SPEC, task_pb2.Limits(deadline=duration_pb2.Duration(seconds=121)))
    assert caught.value.metadata == {"cap": "deadline", "max": "120"}


def test_negative_limits_are_invalid_not_above_cap() -> None:
    with pytest.raises(InvalidArgument) as caught:
        effective_budget(SPEC, task_pb2.Limits(max_tool_calls=-1))
    assert caught.value.reason == "INVALID_REQUEST"
    assert caught.value.violations[0].field == "limits.max_tool_calls"


def test_budget_checks_name_the_stop_reason() -> None:
    budget = Budget(2, 100, 1, 10.0, 0.5)
    assert before_model_call(budget, Tally()) is None
    assert before_model_call(budget, Tally(iterations=2)).stop_reason == task_pb2.STOP_REASON_MAX_ITERATIONS  # type: ignore[union-attr]
    assert (
        before_model_call(budget, Tally(prompt_tokens=60, completion_tokens=40)).stop_reason
        == task_pb2.STOP_REASON_TOKEN_CAP
    )  # type: ignore[union-attr]
    assert before_tool_call(budget, Tally(tool_calls=1)).stop_reason == task_pb2.STOP_REASON_MAX_TOOL_CALLS  # type: ignore[union-attr]
    assert before_tool_call(budget, Tally(cost_usd=0.5)).stop_reason == task_pb2.STOP_REASON_COST_CAP  # type: ignore[union-attr]
    assert before_tool_call(Budget(2, 100, 5, 10.0, 0.0), Tally(cost_usd=99)) is None  # 0 = no cost cap
    assert deadline_passed(budget, 100.0, 109.9) is None
    assert deadline_passed(budget, 100.0, 110.0).stop_reason == task_pb2.STOP_REASON_DEADLINE  # type: ignore[union-attr]


def test_budget_and_usage_round_trip_through_protos() -> None:
    budget = Budget(3, 500, 4, 12.5, 0.25)
    assert Budget.from_proto(budget.to_proto()) == budget
    tally = Tally(
        iterations=2, prompt_tokens=10, completion_tokens=5, tool_calls=3, cost_usd=0.001, wall_time_s=1.5
    )
    usage = tally.to_proto()
    assert usage.total_tokens == 15 and Tally.from_proto(usage) == tally

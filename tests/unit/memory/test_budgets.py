from __future__ import annotations

import calendar

import pytest

from agentmesh.kit.config import Settings
from agentmesh.v1 import task_pb2
from memory.usage import Budgets, Counters, check_budgets, counters_from_hash, seconds_to_utc_midnight

LIMITS = task_pb2.Limits(max_iterations=12, token_cap=16384, max_tool_calls=5, max_cost_usd=0.5)


def test_nothing_exhausted_reports_remaining_tokens() -> None:
    status = check_budgets(
        Counters(iterations=3, prompt_tokens=1000, completion_tokens=384), Counters(), Budgets(LIMITS)
    )
    assert status.exhausted is None
    assert status.remaining_tokens == 16384 - 1384


@pytest.mark.parametrize(
    ("task", "budget", "reason"),
    [
        (Counters(iterations=12), "iterations", task_pb2.STOP_REASON_MAX_ITERATIONS),
        (Counters(prompt_tokens=16000, completion_tokens=400), "tokens", task_pb2.STOP_REASON_TOKEN_CAP),
        (Counters(tool_calls=5), "tool_calls", task_pb2.STOP_REASON_MAX_TOOL_CALLS),
        (Counters(cost_nusd=500_000_000), "cost", task_pb2.STOP_REASON_COST_CAP),
    ],
)
def test_each_task_budget_names_itself(task: Counters, budget: str, reason: int) -> None:
    exhausted = check_budgets(task, Counters(), Budgets(LIMITS)).exhausted
    assert exhausted is not None
    assert (exhausted.scope, exhausted.budget, exhausted.stop_reason) == ("task", budget, reason)
    assert budget in exhausted.message and exhausted.retry_after is None
    error = exhausted.error()
    assert error.reason == "BUDGET_EXHAUSTED" and error.metadata["budget"] == budget


def test_zero_means_no_cap() -> None:
    huge = Counters(iterations=10**6, prompt_tokens=10**9, tool_calls=10**6, cost_nusd=10**15)
    assert check_budgets(huge, huge, Budgets(task_pb2.Limits())).exhausted is None


def test_daily_budget_retries_after_midnight() -> None:
    now = calendar.timegm((2026, 3, 1, 23, 0, 0))
    budgets = Budgets(None, user_daily_tokens=1000)
    status = check_budgets(Counters(), Counters(prompt_tokens=1000), budgets, now)
    assert status.exhausted is not None and status.exhausted.scope == "user_daily"
    assert status.exhausted.retry_after == pytest.approx(3600)
    assert status.remaining_tokens == 0
    assert seconds_to_utc_midnight(calendar.timegm((2026, 3, 1, 0, 0, 0))) == 86400


def test_budgets_from_settings() -> None:
    settings = Settings.from_env(
        {"AGENTMESH_USER_DAILY_TOKENS": "5000", "AGENTMESH_USER_DAILY_COST_USD": "2.5"}
    )
    budgets = Budgets.from_settings(settings, LIMITS)
    assert (budgets.user_daily_tokens, budgets.user_daily_cost_usd, budgets.task) == (5000, 2.5, LIMITS)


def test_counters_convert_to_the_public_usage() -> None:
    usage = Counters(2, 100, 20, 3, 1_500_000, 0, 2_500, 1).to_proto()
    assert (usage.iterations, usage.total_tokens, usage.tool_calls) == (2, 120, 3)
    assert usage.cost_usd == pytest.approx(0.0015)
    assert (usage.wall_time.seconds, usage.wall_time.nanos) == (2, 500_000_000)


def test_unknown_counter_format_is_data_loss() -> None:
    from agentmesh.kit.errors import DataLoss

    assert counters_from_hash({b"v": b"1", b"tool_calls": b"4"}, "x").tool_calls == 4
    with pytest.raises(DataLoss, match="unreadable"):
        counters_from_hash({b"v": b"7", b"tool_calls": b"4"}, "x")
    with pytest.raises(DataLoss):
        counters_from_hash({b"something": b"else"}, "x")

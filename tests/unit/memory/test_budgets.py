from __future__ import annotations

import calendar

import pytest

from agentmesh.kit.config import Settings
from agentmesh.v1 import task_pb2
from memory.usage import Budgets, Counters, check_budgets, counters_from_hash, seconds_to_utc_midnight


def test_nothing_exhausted_under_the_daily_caps() -> None:
    budgets = Budgets(user_daily_tokens=2000, user_daily_cost_usd=0.5)
    status = check_budgets(Counters(), Counters(prompt_tokens=1000, cost_nusd=400_000_000), budgets)
    assert status.exhausted is None


@pytest.mark.parametrize(
    ("today", "budget", "reason"),
    [
        (Counters(prompt_tokens=1600, completion_tokens=400), "tokens", task_pb2.STOP_REASON_TOKEN_CAP),
        (Counters(cost_nusd=500_000_000), "cost", task_pb2.STOP_REASON_COST_CAP),
    ],
)
def test_each_daily_budget_names_itself(today: Counters, budget: str, reason: int) -> None:
    budgets = Budgets(user_daily_tokens=2000, user_daily_cost_usd=0.5)
    exhausted = check_budgets(Counters(), today, budgets).exhausted
    assert exhausted is not None
    assert (exhausted.scope, exhausted.budget, exhausted.stop_reason) == ("user_daily", budget, reason)
    assert budget in exhausted.message and exhausted.retry_after is not None
    error = exhausted.error()
    assert error.reason == "BUDGET_EXHAUSTED" and error.metadata["budget"] == budget


def test_zero_means_no_cap() -> None:
    huge = Counters(iterations=10**6, prompt_tokens=10**9, tool_calls=10**6, cost_nusd=10**15)
    assert check_budgets(huge, huge, Budgets()).exhausted is None


def test_daily_budget_retries_after_midnight() -> None:
    now = calendar.timegm((2026, 3, 1, 23, 0, 0))
    budgets = Budgets(user_daily_tokens=1000)
    status = check_budgets(Counters(), Counters(prompt_tokens=1000), budgets, now)
    assert status.exhausted is not None and status.exhausted.scope == "user_daily"
    assert status.exhausted.retry_after == pytest.approx(3600)
    assert seconds_to_utc_midnight(calendar.timegm((2026, 3, 1, 0, 0, 0))) == 86400


def test_budgets_from_settings() -> None:
    settings = Settings.from_env(
        {"AGENTMESH_USER_DAILY_TOKENS": "5000", "AGENTMESH_USER_DAILY_COST_USD": "2.5"}
    )
    budgets = Budgets.from_settings(settings)
    assert (budgets.user_daily_tokens, budgets.user_daily_cost_usd) == (5000, 2.5)


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

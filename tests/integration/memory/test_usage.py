"""UsageStore against a real server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from agentmesh.kit import metrics
from agentmesh.kit.errors import DataLoss, InvalidArgument
from agentmesh.v1 import task_pb2
from memory import keys
from memory import usage as usage_module
from memory.connection import create_redis
from memory.prices import Cost, builtin_prices
from memory.usage import Attribution, Budgets, StepUsage, UsageReport, UsageStore, utc_day

pytestmark = pytest.mark.integration
T, U = "acme", "u-1"


def turn(model: str, prompt_tokens: int, completion_tokens: int, wall_s: float = 0.0) -> StepUsage:
    """A model turn priced the one way (the built-in prices), as the agent's state machine does."""
    cost = builtin_prices().cost(model, prompt_tokens, completion_tokens)
    return StepUsage.model_call(prompt_tokens, completion_tokens, cost, wall_s=wall_s)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = create_redis(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
def usage(client: aioredis.Redis) -> UsageStore:
    return UsageStore(client, retention_s=3600)


def who(task: str = "t-1", session: str = "s-1", domain: str = "refunds", user: str = U) -> Attribution:
    return Attribution(T, user, domain, task_id=task, session_id=session)


async def test_a_step_is_counted_everywhere_it_belongs(usage: UsageStore, client: aioredis.Redis) -> None:
    await usage.record(who(), turn("gpt-4o-mini", 1_000_000, 100_000, wall_s=1.5))
    await usage.record(who(), StepUsage.tool_call("payments_refund", attempts=2))
    await usage.record(who("t-2"), turn("gpt-4o-mini", 10, 5))
    await usage.record(who("t-3", session="s-2"), turn("gpt-4o-mini", 1, 1))
    await usage.record(who("t-4", domain="fulfillment"), turn("gpt-4o-mini", 1, 1))

    task = await usage.for_task(T, U, "t-1")
    assert (task.usage.iterations, task.usage.prompt_tokens, task.usage.completion_tokens) == (
        1,
        1_000_000,
        100_000,
    )
    assert task.usage.tool_calls == 2 and task.usage.cost_usd == pytest.approx(0.21)
    assert task.usage.wall_time.seconds == 1 and task.usage.wall_time.nanos == 500_000_000

    session = await usage.for_session(T, U, "s-1", "refunds")
    assert session.tasks == 2 and session.usage.iterations == 2 and session.usage.total_tokens == 1_100_015
    in_domain = await usage.for_user(T, U, "refunds")
    assert in_domain.tasks == 3 and in_domain.usage.iterations == 3
    everywhere = await usage.for_user(T, U)
    assert everywhere.tasks == 4 and everywhere.usage.iterations == 4
    assert (await usage.for_user_today(T, U)).usage.iterations == 4
    domain = await usage.for_domain("refunds", T)
    assert domain.tasks == 3 and domain.usage.tool_calls == 2
    for key in (keys.usage_task(T, U, "t-1"), keys.usage_user(T, U), keys.usage_domain(T, "refunds")):
        assert 3_500_000 < await client.pttl(key) <= 3_600_000
    assert await client.pttl(keys.usage_user_day(T, U, utc_day(time.time()))) <= 2 * 86_400_000


async def test_get_usage_answers_the_api(usage: UsageStore) -> None:
    await usage.record(who(), turn("gpt-4o", 100, 50))
    await usage.record(who("t-2", session="s-2"), turn("gpt-4o", 1, 1))
    response = await usage.get_usage(T, U, "refunds", "s-1")
    assert isinstance(response, UsageReport)
    assert response.tasks == 1 and response.usage.total_tokens == 150
    assert (await usage.get_usage(T, U, "refunds")).tasks == 2
    # someone else's session, or an unknown one, reads as zero
    assert (await usage.get_usage(T, "u-2", "refunds", "s-1")).usage.total_tokens == 0


async def test_unpriced_models_are_counted_and_visible(usage: UsageStore) -> None:
    before = metrics.UNPRICED_TOKENS.labels("refunds")._value.get()
    await usage.record(who(), turn("scripted", 70, 30))
    report = await usage.for_user(T, U, "refunds")
    assert report.usage.cost_usd == 0 and report.unpriced_tokens == 100
    assert metrics.UNPRICED_TOKENS.labels("refunds")._value.get() == before + 100


async def test_metrics_get_only_domain_and_tool(usage: UsageStore) -> None:
    tokens = metrics.MODEL_TOKENS.labels("billing", "prompt")._value.get()
    calls = metrics.TOOL_CALLS_COUNTED.labels("billing", "crm_get")._value.get()
    await usage.record(who(domain="billing"), turn("gpt-4o", 40, 2))
    await usage.record(who(domain="billing"), StepUsage.tool_call("crm_get"))
    assert metrics.MODEL_TOKENS.labels("billing", "prompt")._value.get() == tokens + 40
    assert metrics.TOOL_CALLS_COUNTED.labels("billing", "crm_get")._value.get() == calls + 1
    label_names = {
        name
        for metric in (metrics.MODEL_TOKENS, metrics.MODEL_COST_USD, metrics.TOOL_CALLS_COUNTED)
        for name in metric._labelnames
    }
    assert label_names == {"domain", "type", "tool"}


async def test_the_daily_cost_budget_counts_the_cost_each_step_carries(usage: UsageStore) -> None:
    # The store adds the cost the step was priced at (once, by the state machine) and never
    # prices again: 0.3 USD carried for tokens the built-in table would price at ~0.000001.
    carried = StepUsage.model_call(10, 5, Cost(300_000_000, priced=True))
    daily = Budgets(user_daily_cost_usd=0.5)
    status = await usage.record(who(), carried, budgets=daily)
    assert status.exhausted is None and status.task.cost_nusd == 300_000_000
    status = await usage.record(who("t-2"), carried, budgets=daily)
    assert status.exhausted is not None
    assert (status.exhausted.scope, status.exhausted.budget) == ("user_daily", "cost")
    assert status.exhausted.stop_reason == task_pb2.STOP_REASON_COST_CAP
    assert status.user_today.cost_usd == pytest.approx(0.6)
    # the read-only check agrees, and another user is not affected
    assert (await usage.status(who(), daily)).exhausted is not None
    assert (await usage.status(who("t-3", user="u-2"), daily)).exhausted is None
    # a step the model had no price for counts its tokens as unpriced, at no cost
    unpriced = StepUsage.model_call(7, 3, Cost(0, priced=False))
    status = await usage.record(who("t-4"), unpriced)
    assert (status.task.cost_nusd, status.task.unpriced_tokens) == (0, 10)


async def test_daily_budget_spans_tasks_and_domains(usage: UsageStore) -> None:
    daily = Budgets(user_daily_tokens=500)
    await usage.record(who("t-1"), turn("gpt-4o", 300, 0), budgets=daily)
    status = await usage.record(who("t-2", domain="fulfillment"), turn("gpt-4o", 250, 0), budgets=daily)
    assert status.exhausted is not None and status.exhausted.scope == "user_daily"
    error = status.exhausted.error()
    assert error.reason == "BUDGET_EXHAUSTED" and error.retry_after is not None and error.retry_after <= 86400
    assert (await usage.status(who("t-3", user="u-2"), daily)).exhausted is None


async def test_domain_totals_over_all_tenants(usage: UsageStore) -> None:
    await usage.record(who(), turn("gpt-4o", 10, 0))
    await usage.record(Attribution("globex", "u-9", "refunds", "t-9"), turn("gpt-4o", 5, 0))
    await usage.record(Attribution("globex", "u-9", "billing", "t-8"), turn("gpt-4o", 7, 0))
    total = await usage.for_domain("refunds")
    assert total.tasks == 2 and total.usage.prompt_tokens == 15


async def test_bad_records_and_foreign_counters(usage: UsageStore, client: aioredis.Redis) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await usage.record(Attribution(T, U, "Not A Slug", task_id=""), StepUsage(prompt_tokens=-1))
    assert {v.field for v in caught.value.violations} == {"domain", "task_id", "prompt_tokens"}
    await client.hset(keys.usage_user(T, U), mapping={"v": "99", "iterations": "1"})
    with pytest.raises(DataLoss):
        await usage.for_user(T, U)


async def test_one_round_trip_per_record_and_nothing_counted_twice_after_a_script_flush(
    usage: UsageStore, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's and the domain's scripts go in one pipeline; a server that lost its scripts
    (restart, failover: NOSCRIPT) runs each exactly once all the same."""
    await usage.record(who(), turn("gpt-4o-mini", 10, 5))  # the task's first record (+1 call)
    sent: list[int] = []
    execute = aioredis.client.Pipeline.execute

    async def counted(self: aioredis.client.Pipeline, raise_on_error: bool = True) -> list[object]:
        sent.append(len(self.command_stack))
        return await execute(self, raise_on_error)

    monkeypatch.setattr(aioredis.client.Pipeline, "execute", counted)
    await usage.record(who(), turn("gpt-4o-mini", 10, 5))
    assert sent == [2]
    await client.script_flush()
    await client.script_load(usage_module._RECORD)  # only the domain's script is missing: it alone runs again
    await usage.record(who(), turn("gpt-4o-mini", 10, 5))
    task = await usage.for_task(T, U, "t-1")
    assert task.usage.iterations == 3 and task.usage.total_tokens == 45
    domain = await usage.for_domain("refunds", T)
    assert domain.tasks == 1 and domain.usage.iterations == 3 and domain.usage.total_tokens == 45

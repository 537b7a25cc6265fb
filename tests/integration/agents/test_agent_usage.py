"""One usage model on a real agent process: a model turn is priced once (by the state machine,
with the configured price table), the usage store adds up that same cost, and the task's cost
cap stops a task outside the unit tests (AGENTMESH_PRICE_TABLE, real Redis, the scripted model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentmesh.v1 import agent_service_pb2 as pb
from agentmesh.v1 import task_pb2
from tests.integration.agents.conftest import DOMAINS, AgentFactory
from tests.integration.agents.test_agent_service import ORDER
from tests.support.auth import bearer

pytestmark = pytest.mark.integration

# USD per 1M tokens for the scripted model (the agent fixture's model name).
PROMPT_PRICE, COMPLETION_PRICE = 3.0, 7.0


def priced(usage: task_pb2.Usage) -> float:
    return (usage.prompt_tokens * PROMPT_PRICE + usage.completion_tokens * COMPLETION_PRICE) / 1e6


async def test_a_turn_is_priced_once_and_the_task_cost_cap_stops_the_task(
    agent: AgentFactory, example_tools: Any, tmp_path: Path
) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text(f"models:\n  scripted: {{prompt: {PROMPT_PRICE}, completion: {COMPLETION_PRICE}}}\n")
    metadata = bearer(user="grace")
    async with agent(DOMAINS / "fulfillment.yaml", price_table=table) as (_, stub):
        done = await stub.Run(
            pb.RunRequest(instruction=ORDER, session_id="s-1"), metadata=metadata, timeout=60
        )
        recorded = await stub.GetUsage(pb.GetUsageRequest(session_id="s-1"), metadata=metadata)
        capped = await stub.Run(
            pb.RunRequest(instruction=ORDER, limits=task_pb2.Limits(max_cost_usd=0.000001)),
            metadata=metadata,
            timeout=60,
        )
    task = done.task
    assert task.state == task_pb2.TASK_STATE_COMPLETED
    model_steps = [s for s in task.steps if s.kind == task_pb2.STEP_KIND_MODEL_CALL]
    assert model_steps and all(s.usage.cost_usd == pytest.approx(priced(s.usage)) for s in model_steps)
    # The task's cost, the usage store's and the price of its tokens are one figure (not two, not 2x).
    expected = sum(priced(s.usage) for s in model_steps)
    assert expected > 0
    assert task.usage.cost_usd == pytest.approx(expected)
    assert recorded.usage.cost_usd == pytest.approx(expected)
    assert recorded.usage.total_tokens == task.usage.total_tokens
    # The cap is enforced by the state machine before the next call: one model turn, then stop.
    stopped = capped.task
    assert stopped.state == task_pb2.TASK_STATE_FAILED
    assert stopped.stop_reason == task_pb2.STOP_REASON_COST_CAP
    assert stopped.error.metadata["limit"] == "max_cost_usd"
    assert [s.kind for s in stopped.steps] == [task_pb2.STEP_KIND_MODEL_CALL]
    assert stopped.usage.cost_usd == pytest.approx(priced(stopped.steps[0].usage))

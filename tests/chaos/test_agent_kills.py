"""SIGKILL real agent replicas mid-task: nothing lost, nothing stuck, no effect twice.

Two replicas each of the training and fulfillment domains, the example tools, the scripted
model, the registry and valkey (AOF everysec), every one its own process started by the local
mesh's supervisor. Half the kills are timed on a side-effecting call in flight — claimed under
its idempotency key at the tool, not yet answered, so not yet checkpointed — the rest hit a
replica at any point of a task; the victim is restarted before the next kill. Every task must
settle; every KEYED effect (dummy_act, reservation, shipment, email) happened exactly once;
a NON_IDEMPOTENT call (dummy_act_once) whose worker died mid-call ends "outcome unknown",
never repeated. The CI subset does 10 kills; `make chaos` runs the 100-kill drill.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.drills import FULFILLMENT, STOCK, TRAINING, Figures, Workload, kill_agents
from tests.chaos.harness import chaos_mesh

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TOOLS = ("dummy", "inventory", "shipping", "email")
# The dummy's latency keeps each side-effecting call in flight long enough to aim a kill at it.
TOOL_ENV = {"inventory": STOCK, "dummy": {"DUMMY_LATENCY_MS": "300"}}


async def _drill(tmp_path: Path, kills: int, feed: dict[str, int], scenario: str) -> Figures:
    figures = Figures(scenario)
    started = time.monotonic()
    async with chaos_mesh(
        tmp_path, agents={TRAINING: 2, FULFILLMENT: 2}, tools=TOOLS, tool_env=TOOL_ENV
    ) as mesh:
        workload = Workload(mesh, prefix=scenario)
        await kill_agents(mesh, workload, figures, kills=kills, feed=feed)
        await workload.check(figures)
        # Crashed work is resumed from its checkpoint: some kill hit a call in flight, and a
        # NON_IDEMPOTENT one among them ended "outcome unknown" rather than being repeated.
        assert figures.kills_in_call >= kills // 4, figures.summary()
        assert figures.extra["once_interrupted_in_call"] >= 1, figures.summary()
        figures.seconds = round(time.monotonic() - started, 1)
        figures.report()
    return figures


async def test_ten_agent_kills_lose_and_repeat_nothing(tmp_path: Path) -> None:
    figures = await _drill(tmp_path, 10, {"acts": 3, "once": 1, "orders": 2}, "ci-kills")
    assert figures.kills == 10 and figures.lost == figures.stuck == figures.duplicated == 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_hundred_agent_kills_lose_and_repeat_nothing(tmp_path: Path) -> None:
    figures = await _drill(tmp_path, 100, {"acts": 3, "once": 1, "orders": 2}, "full-kills")
    assert figures.kills == 100 and figures.outcome_unknown >= 1, figures.summary()

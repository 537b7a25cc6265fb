"""What the chaos scenarios share: a workload with countable effects, the kill loop, the ledger checks.

The workload runs two domains on the real runtime:

- training: "Act on <action>" → dummy_act (KEYED), "Act once on <action>" → dummy_act_once
  (NON_IDEMPOTENT); the dummy's `effects_by_action` is the ledger, one entry per action;
- fulfillment: "Ship order ORD-n: 1 x ABC-001 … notify cN@example.com" → inventory_reserve,
  shipping_create_shipment, email_send (all KEYED); the ledgers are the reservations and
  shipments of the order and the outbox of its unique address.

`check` demands: every task settled and present (none lost, none stuck), every KEYED effect
exactly once, every NON_IDEMPOTENT effect at most once (and a task that may have lost one ends
"outcome unknown"), queues empty (nothing pending, nothing dead-lettered).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentmesh.v1 import task_pb2
from tests.chaos.harness import ChaosMesh, Kill, outcome_unknown

TRAINING, FULFILLMENT = "training", "fulfillment"
IN_CALL_TOOLS = ("dummy_act", "dummy_act_once", "inventory_reserve", "shipping_create_shipment", "email_send")
STOCK = {"INVENTORY_STOCK": "ABC-001=1000000"}


def order_text(order: str, email: str) -> str:
    return (
        f"Ship order {order}: 1 x ABC-001 to Ada Lovelace, 12 Analytical Street, London, SW1A 1AA, GB; "
        f"notify {email}"
    )


@dataclass
class Figures:
    """What a scenario measured; appended as JSON to $AGENTMESH_CHAOS_REPORT when set."""

    scenario: str
    tasks: int = 0
    kills: int = 0
    kills_in_call: int = 0
    restarts: int = 0
    lost: int = 0
    stuck: int = 0
    duplicated: int = 0
    outcome_unknown: int = 0
    recovery_s: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        delays = data.pop("recovery_s")
        if delays:
            data["recovery_s"] = {
                "n": len(delays),
                "median": round(statistics.median(delays), 2),
                "max": round(max(delays), 2),
            }
        return data

    def report(self) -> None:
        line = json.dumps(self.summary(), sort_keys=True)
        print(f"chaos figures: {line}")
        target = os.environ.get("AGENTMESH_CHAOS_REPORT")
        if target:
            with Path(target).open("a") as sink:
                sink.write(line + "\n")


@dataclass
class Workload:
    mesh: ChaosMesh
    prefix: str = "w"
    acts: dict[str, str] = field(default_factory=dict)  # task id -> action
    once: dict[str, str] = field(default_factory=dict)
    orders: dict[str, tuple[str, str]] = field(default_factory=dict)  # task id -> (order, email)
    _n: int = 0

    @property
    def count(self) -> int:
        return len(self.acts) + len(self.once) + len(self.orders)

    def _next(self) -> int:
        self._n += 1
        return self._n

    async def act(self) -> str:
        n = self._next()
        action = f"{self.prefix}-k{n}"
        task_id = await self.mesh.submit(TRAINING, f"Act on {action}", f"{self.prefix}-act-{n}")
        self.acts[task_id] = action
        return task_id

    async def act_once(self) -> str:
        n = self._next()
        action = f"{self.prefix}-o{n}"
        task_id = await self.mesh.submit(TRAINING, f"Act once on {action}", f"{self.prefix}-once-{n}")
        self.once[task_id] = action
        return task_id

    async def order(self) -> str:
        n = self._next()
        order, email = f"ORD-{n:05d}", f"{self.prefix}{n}@example.com"
        task_id = await self.mesh.submit(FULFILLMENT, order_text(order, email), f"{self.prefix}-ord-{n}")
        self.orders[task_id] = (order, email)
        return task_id

    async def batch(self, acts: int = 0, once: int = 0, orders: int = 0) -> None:
        for _ in range(acts):
            await self.act()
        for _ in range(once):
            await self.act_once()
        for _ in range(orders):
            await self.order()

    async def settle(self, timeout: float = 180, during: Any = None) -> dict[str, task_pb2.Task]:
        tasks = {}
        if self.acts or self.once:
            tasks |= await self.mesh.wait_settled(TRAINING, [*self.acts, *self.once], timeout, during=during)
        if self.orders:
            tasks |= await self.mesh.wait_settled(FULFILLMENT, list(self.orders), timeout, during=during)
        return tasks

    async def check(self, figures: Figures, *, dummy: str = "", allow_unknown: bool = True) -> None:
        """Settle, then hold every ledger to exactly-once (KEYED) / at-most-once (NON_IDEMPOTENT)."""
        tasks = await self.settle()
        figures.tasks = len(tasks)
        figures.extra["submit_retries"] = self.mesh.submit_retries
        problems: list[str] = []
        effects = (
            (await self.mesh.dummy_stats(dummy))["effects_by_action"] if (self.acts or self.once) else {}
        )
        for task_id, action in self.acts.items():
            task = tasks[task_id]
            if task.state != task_pb2.TASK_STATE_COMPLETED:
                problems.append(
                    f"act {action} ended {task_pb2.TaskState.Name(task.state)}: {task.status_message}"
                )
            if effects.get(action, 0) != 1:
                calls = [
                    f"{s.tool_name} {task_pb2.ToolOutcome.Name(s.outcome)} {s.status_code} x{s.attempts}: "
                    f"{s.summary[:160]}"
                    for s in task.steps
                    if s.tool_name
                ]
                problems.append(
                    f"act {action}: {effects.get(action, 0)} effects, want exactly 1 "
                    f"(task {task_id}: {task.final_answer!r}; tool steps: {calls})"
                )
                figures.duplicated += effects.get(action, 0) > 1
        for task_id, action in self.once.items():
            task = tasks[task_id]
            done = effects.get(action, 0)
            if done > 1:
                problems.append(f"act once {action}: {done} effects (a NON_IDEMPOTENT call was repeated)")
                figures.duplicated += 1
            if outcome_unknown(task):
                figures.outcome_unknown += 1
                if not allow_unknown:
                    problems.append(f"act once {action} ended outcome unknown")
            elif task.state == task_pb2.TASK_STATE_COMPLETED:
                if done != 1:
                    problems.append(f"act once {action} COMPLETED with {done} effects")
            else:
                problems.append(f"act once {action} ended {task_pb2.TaskState.Name(task.state)}")
        for task_id, (order, email) in self.orders.items():
            task = tasks[task_id]
            if task.state != task_pb2.TASK_STATE_COMPLETED or "fulfilled" not in task.final_answer:
                problems.append(f"{order} ended {task_pb2.TaskState.Name(task.state)}: {task.final_answer}")
            reserved = (await self.mesh.ledger("inventory_list_reservations", {"order_id": order}))[
                "reservations"
            ]
            shipped = (await self.mesh.ledger("shipping_get_shipments", {"order_id": order}))["shipments"]
            mailed = (await self.mesh.ledger("email_list_outbox", {"to": email}))["messages"]
            counts = (len(reserved), len(shipped), len(mailed))
            if counts != (1, 1, 1):
                problems.append(f"{order}: reservations, shipments, emails = {counts}, want (1, 1, 1)")
                figures.duplicated += any(c > 1 for c in counts)
        # A worker killed while its NON_IDEMPOTENT call was in flight: the resumed task must not
        # call again (the example SDK would replay it, a real backend might not) — it parks.
        for kill in self.mesh.kills:
            if kill.window == "in-call:dummy_act_once" and not outcome_unknown(tasks[kill.task_id]):
                task = tasks[kill.task_id]
                problems.append(
                    f"act once {self.once[kill.task_id]} was interrupted mid-call and ended "
                    f"{task_pb2.TaskState.Name(task.state)}, not outcome unknown"
                )
        figures.extra["once_interrupted_in_call"] = sum(
            k.window == "in-call:dummy_act_once" for k in self.mesh.kills
        )
        domains = ([TRAINING] if self.acts or self.once else []) + ([FULFILLMENT] if self.orders else [])
        for domain in domains:
            stats = await self.mesh.stats(domain)
            if stats.pending or stats.depth or stats.dead_letters:
                problems.append(f"{domain} queue not drained: {stats}")
                figures.stuck += stats.pending + stats.depth
        assert not problems, "\n".join(problems[:30])


async def wait_recovered(mesh: ChaosMesh, kill: Kill, domain: str, timeout: float = 60) -> None:
    """Until another attempt took the killed task over (or it settled); sets kill.recovered_after."""
    if not kill.task_id:
        return
    deadline = kill.at + timeout
    while time.monotonic() < deadline:
        task = await mesh.snapshot(domain, kill.task_id)
        if task is not None and (task.attempt > kill.attempt or task.state != task_pb2.TASK_STATE_WORKING):
            kill.recovered_after = time.monotonic() - kill.at
            return
        await asyncio.sleep(0.05)


async def pick_victim(
    mesh: ChaosMesh, domains: tuple[str, ...], *, in_call: bool, tools: tuple[str, ...] = IN_CALL_TOOLS
) -> tuple[str, str, str, str] | None:
    """(process, domain, task id, window) of a replica worth killing now, or None.

    in_call: only a replica with a side-effecting call in flight (claimed under its idempotency
    key at the tool, not yet answered — so not yet checkpointed); else any replica holding a task."""
    held = {domain: await mesh.holders(domain) for domain in domains}
    if in_call:
        for tool in tools:
            for task_id in await mesh.calls_in_flight(tool):
                for domain in domains:
                    if task_id in held[domain]:
                        return held[domain][task_id], domain, task_id, f"in-call:{tool}"
        return None
    choices = [(name, domain, task_id) for domain in domains for task_id, name in held[domain].items()]
    if not choices:
        return None
    name, domain, task_id = random.choice(choices)
    return name, domain, task_id, "mid-task"


async def _window_hit(mesh: ChaosMesh, domain: str, task_id: str, window: str) -> str:
    """`in-call:<tool>` if the killed attempt had not checkpointed the call's result, else
    `after-call:<tool>` (the answer was saved between the pick and the kill)."""
    tool = window.split(":", 1)[1]
    task = await mesh.snapshot(domain, task_id, steps=True)
    saved = task is not None and any(
        s.kind == task_pb2.STEP_KIND_TOOL_CALL and s.tool_name == tool for s in task.steps
    )
    return f"after-call:{tool}" if saved else window


async def kill_agents(
    mesh: ChaosMesh,
    workload: Workload,
    figures: Figures,
    *,
    kills: int,
    feed: dict[str, int],
    once_every: int = 4,
    timeout: float = 600,
) -> None:
    """SIGKILL agent replicas holding tasks `kills` times, alternating kills timed on a
    side-effecting call in flight with kills at any point of a task; each victim is restarted
    (and SERVING) before the next kill. `feed`: the batch (acts, once, orders) submitted before
    each kill so there is always work to interrupt."""
    domains = (TRAINING, FULFILLMENT)
    recoveries = []
    deadline = time.monotonic() + timeout
    for number in range(kills):
        await workload.batch(**feed)
        in_call = number % 2 == 0
        # Every `once_every` kills, one aimed at a NON_IDEMPOTENT call in flight.
        tools = ("dummy_act_once",) if number % once_every == 2 else IN_CALL_TOOLS
        victim = None
        wait_until = time.monotonic() + 3.0
        while victim is None:
            assert time.monotonic() < deadline, f"only {number} of {kills} kills within {timeout:.0f}s"
            victim = await pick_victim(mesh, domains, in_call=in_call, tools=tools)
            if victim is None and time.monotonic() > wait_until:
                if in_call and tools != IN_CALL_TOOLS:
                    tools = IN_CALL_TOOLS  # no act-once call caught: any side-effecting call
                    wait_until = time.monotonic() + 3.0
                elif in_call:
                    in_call = False  # none in flight: any task
                else:
                    await workload.batch(**feed)
                    wait_until = time.monotonic() + 3.0
            if victim is None:
                await asyncio.sleep(0.01)
        name, domain, task_id, window = victim
        task = await mesh.snapshot(domain, task_id)
        kill = mesh.kill(name, task_id=task_id, window=window, attempt=task.attempt if task else 0)
        if window.startswith("in-call:"):
            # The pick saw the call pending at the tool; by the SIGKILL its answer may have been
            # checkpointed. The victim is dead and nobody reclaims its task before the idle timeout,
            # so the record read now says which window the kill really hit.
            kill.window = window = await _window_hit(mesh, domain, task_id, window)
        figures.kills += 1
        figures.kills_in_call += window.startswith("in-call")
        recoveries.append(asyncio.ensure_future(wait_recovered(mesh, kill, domain)))
        await mesh.restart(name)
        figures.restarts += 1
    await asyncio.gather(*recoveries)
    figures.recovery_s += [k.recovered_after for k in mesh.kills if k.recovered_after is not None]
    figures.extra["windows"] = sorted({k.window for k in mesh.kills})

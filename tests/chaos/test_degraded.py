"""Degraded dependencies with the whole mesh running.

- d. The training dummy answers 30 % of calls UNAVAILABLE, behind a link with 2 s latency spikes
  and a burst of failures: every training task settles within its deadline (the effects of those
  that acted are there exactly once), the agents' circuit breaker for the dummy opens and, once
  the dummy recovers, closes; every fulfillment task finishes within its deadline meanwhile.
- e. The registry SIGKILLed: agents keep resolving tools from their cache and tasks complete;
  the registry back: the watches resume (the gauge says so, and a binding changed afterwards
  reaches the agents: their next calls go to the new endpoint).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from agentmesh.kit.auth import Principal
from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import HTTP_PORT_OFFSET
from agentmesh.v1 import task_pb2, tool_registry_service_pb2, tool_registry_service_pb2_grpc
from examples._common import load
from tests.chaos.drills import FULFILLMENT, STOCK, TRAINING, Figures, Workload
from tests.chaos.harness import TENANT, ChaosMesh, chaos_mesh
from tests.chaos.proxy import CLEAN, Faults
from tests.support.auth import bearer, issuer
from tests.support.http import SessionClient

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

TOOLS = ("dummy", "inventory", "shipping", "email")
OPERATOR_SCOPES = ("registry:write", "registry:admin")


async def configure_dummy(mesh: ChaosMesh, behaviour: dict[str, Any], process: str = "tool-dummy") -> None:
    """dummy.v1.Dummy/Configure on the process's own port (an operator control, not a tool), with a
    token whose audience is the method, as the operator's controls send (examples/dummy/control.py)."""
    schema = load("dummy").methods["Configure"].schema
    method = schema.grpc_path.lstrip("/")
    operator = Principal(subject="chaos-operator", tenant=TENANT)
    token = issuer().tool_token(tool=method, principal=operator, scopes=(), actor="operator")
    async with create_channel(f"127.0.0.1:{mesh.tool_ports[process]}") as channel:
        call = channel.unary_unary(
            schema.grpc_path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=schema.response_class.FromString,
        )
        await call(
            json_format.ParseDict(behaviour, schema.request_class()),
            timeout=5,
            metadata=[("authorization", f"Bearer {token}")],
        )


async def metric(mesh: ChaosMesh, process: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus metric from the process's HTTP listener (0 when absent)."""
    port = mesh.mesh.planned(process).grpc_port
    assert port is not None
    async with SessionClient(f"http://127.0.0.1:{port + HTTP_PORT_OFFSET}", timeout=5) as http:
        text = (await http.get("/metrics")).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            got = ",".join(sorted((match.group(2) or "").split(",")))
            if got == wanted:
                return float(match.group(3))
    return 0.0


async def breaker_transitions(mesh: ChaosMesh, state: str) -> float:
    return sum(
        [
            await metric(
                mesh, name, "agentmesh_tool_breaker_transitions_total", tool="dummy_act", state=state
            )
            for name in mesh.replicas(TRAINING)
        ]
    )


def _within_deadline(task: task_pb2.Task, default_s: float) -> float:
    took = (task.end_time.ToMilliseconds() - task.create_time.ToMilliseconds()) / 1000
    deadline = task.limits.deadline.ToTimedelta().total_seconds() or default_s
    assert took <= deadline + 1.0, f"{task.task_id} took {took:.1f}s, deadline {deadline:.0f}s"
    return took


async def test_flaky_dummy_keeps_budgets_trips_the_breaker_and_spares_the_other_domain(
    tmp_path: Path,
) -> None:
    figures = Figures("flaky-dummy")
    async with chaos_mesh(
        tmp_path,
        agents={TRAINING: 2, FULFILLMENT: 1},
        tools=TOOLS,
        tool_env={"inventory": STOCK},
        proxied={"tool-dummy"},
    ) as mesh:
        workload = Workload(mesh, prefix="flaky")
        # 30 % of calls fail and 10 % of the link's chunks wait 2 s: retries by side-effect class
        # carry most tasks through.
        await configure_dummy(mesh, {"unavailable_rate": 0.3, "seed": 16})
        mesh.proxies["tool-dummy"].faults = Faults(spike_rate=0.1, spike_s=2.0)
        for _ in range(6):
            await workload.batch(acts=4, orders=2)
            await asyncio.sleep(0.5)
        flaky = await workload.settle(timeout=180)
        # Then a burst of failures (the breaker's 5 in a row, four times over): it opens.
        await configure_dummy(mesh, {"unavailable_rate": 0.3, "fail_next": 20, "seed": 17})
        deadline = time.monotonic() + 60
        while (opened := await breaker_transitions(mesh, "OPEN")) < 1:
            assert time.monotonic() < deadline, "the breaker never opened"
            await workload.batch(acts=2, orders=1)
            await asyncio.sleep(0.3)
        flaky |= await workload.settle(timeout=180)
        # The dummy recovers: after the breaker's reset time a probe succeeds and it closes.
        await configure_dummy(mesh, {})
        mesh.proxies["tool-dummy"].faults = CLEAN
        deadline = time.monotonic() + 90
        while await breaker_transitions(mesh, "CLOSED") < 1:
            assert time.monotonic() < deadline, "the breaker never closed after the dummy recovered"
            await workload.batch(acts=1)
            await asyncio.sleep(1.0)
        recovered = await workload.settle(timeout=120)
        stats = await mesh.dummy_stats()
        # Budgets hold: every task settled within its deadline, whatever the dummy did.
        durations = [_within_deadline(t, 30) for i, t in flaky.items() if i in workload.acts]
        order_times = [_within_deadline(t, 60) for i, t in recovered.items() if i in workload.orders]
        assert all(
            t.state == task_pb2.TASK_STATE_COMPLETED for i, t in recovered.items() if i in workload.orders
        )
        effects = stats["effects_by_action"]
        acted = [a for i, a in workload.acts.items() if "performed side effect" in recovered[i].final_answer]
        assert all(effects.get(a) == 1 for a in acted), effects
        assert all(n <= 1 for n in effects.values()), effects
        figures.tasks = len(recovered)
        figures.duplicated = sum(n > 1 for n in effects.values())
        figures.extra = {
            "breaker_opened": opened,
            "breaker_closed": await breaker_transitions(mesh, "CLOSED"),
            "acted": len(acted),
            "injected_failures": stats["injected_failures"],
            "training_max_s": round(max(durations), 1),
            "fulfillment_max_s": round(max(order_times), 1),
        }
        figures.report()


async def test_registry_down_agents_serve_from_cache_and_watches_resume(tmp_path: Path) -> None:
    figures = Figures("registry-down")
    async with chaos_mesh(
        tmp_path, agents={TRAINING: 2}, tools=("dummy",), tool_replicas={"dummy": 2}
    ) as mesh:
        workload = Workload(mesh, prefix="registry")
        await workload.batch(acts=4)  # every replica resolves dummy_act while the registry is up
        await workload.settle(timeout=60)
        mesh.kill("registry")
        figures.kills += 1
        deadline = time.monotonic() + 30
        while any([await metric(mesh, n, "agentmesh_registry_reachable") for n in mesh.replicas(TRAINING)]):
            assert time.monotonic() < deadline, "the agents never noticed the registry was gone"
            await asyncio.sleep(0.2)
        await workload.batch(acts=8)
        down = await workload.settle(timeout=90)
        assert all(t.state == task_pb2.TASK_STATE_COMPLETED for t in down.values())
        assert all("performed side effect" in t.final_answer for t in down.values())
        await mesh.restart("registry")
        figures.restarts += 1
        deadline = time.monotonic() + 60
        while not all(
            [await metric(mesh, n, "agentmesh_registry_reachable") == 1 for n in mesh.replicas(TRAINING)]
        ):
            assert time.monotonic() < deadline, "the agents' watches did not resume"
            await asyncio.sleep(0.2)
        figures.extra["watch_resumed_s"] = round(60 - (deadline - time.monotonic()), 1)
        # A change made now reaches the agents through the resumed watch: dummy_act moves to the
        # second dummy process, and the next calls land there.
        second = f"127.0.0.1:{mesh.tool_ports['tool-dummy-2']}"
        async with create_channel(mesh.mesh.planned("registry").grpc_target or "") as channel:
            registry = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
            # An operator moves the binding the dummy's service registered: write + admin.
            await registry.BindToolEndpoint(
                tool_registry_service_pb2.BindToolEndpointRequest(
                    name="dummy_act", version="1.0.0", endpoint=second
                ),
                timeout=10,
                metadata=bearer(user="chaos-operator", tenant=TENANT, scopes=OPERATOR_SCOPES),
            )
        deadline = time.monotonic() + 30
        moved = Workload(mesh, prefix="moved")
        while (await mesh.dummy_stats("tool-dummy-2"))["effects"] == 0:
            assert time.monotonic() < deadline, "the new binding never reached the agents"
            await moved.batch(acts=1)
            await moved.settle(timeout=60)
        await workload.check(figures, dummy="tool-dummy")
        figures.report()

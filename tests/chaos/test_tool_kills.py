"""SIGKILL a real tool process after its effect committed and before its reply arrived.

The proxy in front of the training dummy (the address it registers) swallows the reply; once
the tool SDK has stored the result under the call's idempotency key, the dummy is SIGKILLed and
the proxy points at a second dummy process sharing the idempotency store (as a Service fronts
its pods). The agent sees its call fail, retries with the same key — and the second process
replays the stored answer without running the action: the ledgers show one effect in the
killed process and none in the survivor. The killed process is restarted afterwards.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agentmesh.v1 import task_pb2
from tests.chaos.drills import TRAINING, Figures
from tests.chaos.harness import ChaosMesh, chaos_mesh
from tests.chaos.proxy import CLEAN, Faults

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def _lost_reply(mesh: ChaosMesh, action: str, victim: str, survivor: str) -> tuple[task_pb2.Task, int]:
    """The task, and the number of the effect the killed process performed for it."""
    proxy = mesh.proxies["tool-dummy"]  # the agent's connection goes to `victim` already
    proxy.faults = Faults(blackhole_replies=True)
    task_id = await mesh.submit(TRAINING, f"Act on {action}", f"tool-kill-{action}")
    deadline = time.monotonic() + 30
    while await mesh.idempotency_state("dummy_act", task_id) != "done":
        assert time.monotonic() < deadline, "the dummy never stored its result"
        await asyncio.sleep(0.01)
    before = await mesh.dummy_stats(victim)
    assert before["effects_by_action"].get(action) == 1, before  # the effect committed
    survivor_before = await mesh.dummy_stats(survivor)
    task = await mesh.snapshot(TRAINING, task_id)
    # New connections go to the survivor before the victim dies: a reconnect in between would
    # find nothing listening, and the agent's channel would back off past its attempts.
    proxy.upstream = ("127.0.0.1", mesh.tool_ports[survivor])
    mesh.kill(victim, task_id=task_id, window="tool", attempt=task.attempt if task else 0)
    proxy.faults = CLEAN
    proxy.reset_connections()
    (done,) = (await mesh.wait_settled(TRAINING, [task_id], timeout=60)).values()
    after = await mesh.dummy_stats(survivor)
    # Replayed, not repeated: the survivor ran nothing for this action.
    assert action not in after["effects_by_action"], after
    assert after["effects"] == survivor_before["effects"], after
    await mesh.restart(victim)
    return done, before["effects"]


def _assert_replayed(task: task_pb2.Task, effect: int) -> None:
    assert task.state == task_pb2.TASK_STATE_COMPLETED, task
    (call,) = [s for s in task.steps if s.tool_name == "dummy_act"]
    assert call.attempts >= 2, call  # the lost reply was retried with the same key
    assert call.outcome in (task_pb2.TOOL_OUTCOME_OK, task_pb2.TOOL_OUTCOME_DEDUPLICATED), task
    # The answer is the killed process's stored result, replayed.
    assert f"side effect #{effect}." in task.final_answer, task.final_answer


async def _run(tmp_path: Path, rounds: int, scenario: str) -> None:
    figures = Figures(scenario)
    async with chaos_mesh(
        tmp_path,
        agents={TRAINING: 1},
        tools=("dummy",),
        proxied={"tool-dummy"},
        tool_replicas={"dummy": 2},
    ) as mesh:
        # One clean call first: the agent's channel to the tool is connected (through the proxy,
        # to the first dummy) before any reply is swallowed.
        warm = await mesh.submit(TRAINING, "Act on warm-up", "tool-kill-warm-up")
        await mesh.wait_settled(TRAINING, [warm], timeout=60)
        for process in ("tool-dummy", "tool-dummy-2"):  # ledger reads ready before the timed part
            await mesh.dummy_stats(process)
        pair = ("tool-dummy", "tool-dummy-2")
        for n in range(rounds):
            victim, survivor = pair if n % 2 == 0 else pair[::-1]
            _assert_replayed(*await _lost_reply(mesh, f"lost-reply-{n}", victim, survivor))
            figures.kills += 1
            figures.restarts += 1
            figures.tasks += 1
        figures.report()


async def test_a_tool_killed_after_its_effect_replays_on_the_retry(tmp_path: Path) -> None:
    await _run(tmp_path, 1, "ci-tool-kill")


@pytest.mark.slow
async def test_tool_kills_back_and_forth_replay_every_time(tmp_path: Path) -> None:
    await _run(tmp_path, 6, "full-tool-kills")

"""The runner's ordering rule (agents/runner.py): everything that led to a side-effecting tool call is
checkpointed *before* the call; read-only calls and model turns do not wait for the journal.

The journal here is gated: a save completes only when the test lets it, so "saved before the call" is
observed exactly instead of raced against a fast Redis (making `_has_effects` always False turns
these tests red; with a real journal the background save usually wins the race and hides it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from agentmesh.v1 import task_pb2
from agents.actions import ToolInvocation
from agents.caller import Caller
from agents.limits import LimitReached
from agents.model.types import ChatRequest, ModelTurn, TokenUsage, ToolCall
from agents.model.wire import parse_arguments
from agents.observations import ToolObservation
from agents.runner import CONTINUE, Verdict, drive
from tests.unit.agents.test_run_machine import NOW, machine, offer

READ_ONLY, KEYED = 1, 3


def _call(name: str, call_id: str) -> ToolCall:
    text, parsed, error = parse_arguments(json.dumps({"sku": "A"}))
    return ToolCall(call_id, name, text, parsed, error)


class TwoTurns:
    """The model asks for one tool call, then answers."""

    model_name = "test-model"

    def __init__(self, tool: str) -> None:
        self.turns = [
            ModelTurn("", (_call(tool, "c1"),), TokenUsage(10, 5), "test-model"),
            ModelTurn("done", (), TokenUsage(10, 5), "test-model"),
        ]

    async def complete(self, request: ChatRequest, *, timeout: float) -> ModelTurn:
        return self.turns.pop(0)

    async def aclose(self) -> None:
        return None


class GatedJournal:
    """Saves a step only when `opened`; records which step indexes are durable."""

    def __init__(self) -> None:
        self.saved: list[int] = []
        self.opened = asyncio.Event()
        self.verdict: Verdict = CONTINUE

    async def checkpoint(
        self, step: task_pb2.Step, usage: task_pb2.Usage, artifacts: Sequence[task_pb2.ArtifactUpdate] = ()
    ) -> Verdict:
        await self.opened.wait()
        self.saved.append(step.index)
        return self.verdict

    async def settle(self) -> Verdict:
        return CONTINUE


class RecordingTools:
    def __init__(self, journal: GatedJournal) -> None:
        self.journal = journal
        self.durable_at_call: list[list[int]] = []
        self.calls: list[tuple[str, Caller, float]] = []

    async def invoke(self, invocation: ToolInvocation, *, caller: Caller, timeout: float) -> ToolObservation:
        self.durable_at_call.append(list(self.journal.saved))
        self.calls.append((invocation.call.name, caller, timeout))
        return ToolObservation(task_pb2.TOOL_OUTCOME_OK, result={"ok": True})


async def _run(
    side_effect: int,
    *,
    open_after: float = 0.05,
    canceled: str | None = None,
    exhausted: LimitReached | None = None,
    outcomes: list[Any] | None = None,
) -> RecordingTools:
    run = machine(offers=[offer("inventory_reserve", side_effect=side_effect)])
    journal = GatedJournal()
    if canceled is not None or exhausted is not None:
        journal.verdict = Verdict(canceled=canceled, exhausted=exhausted)
    tools = RecordingTools(journal)

    async def open_later() -> None:
        await asyncio.sleep(open_after)  # the gate opens later; ordering, not timing, decides the outcome
        journal.opened.set()

    opener = asyncio.create_task(open_later())
    outcome = await drive(
        run,
        model=TwoTurns("inventory_reserve"),
        tools=tools,
        journal=journal,
        caller=Caller("acme", "ada"),
        clock=lambda: NOW + 1,  # the task was created at NOW: well within its deadline
    )
    await opener
    if outcomes is not None:
        outcomes.append((outcome, run.tally.wall_time_s))
    return tools


async def test_a_side_effecting_call_waits_until_the_turn_that_asked_for_it_is_saved() -> None:
    tools = await _run(KEYED)
    assert tools.durable_at_call == [[0]]  # step 0, the model turn asking for the call, was durable


async def test_a_read_only_call_does_not_wait_for_the_journal() -> None:
    tools = await _run(READ_ONLY, open_after=0.2)
    assert tools.durable_at_call == [[]]  # the save was still in flight: no round trip on the critical path


async def test_a_cancel_seen_while_saving_stops_the_side_effect_before_it_runs() -> None:
    tools = await _run(KEYED, canceled="changed my mind")
    assert tools.durable_at_call == []


async def test_the_tool_gets_the_caller_and_the_time_left_of_the_task() -> None:
    tools = await _run(KEYED)
    assert tools.calls == [("inventory_reserve", Caller("acme", "ada"), 119.0)]  # deadline 120 s, 1 s in


async def test_a_budget_exhausted_while_saving_stops_the_task_with_its_reason() -> None:
    outcomes: list[Any] = []
    exhausted = LimitReached(task_pb2.STOP_REASON_TOKEN_CAP, "tokens", "the user's daily tokens are spent")
    tools = await _run(KEYED, exhausted=exhausted, outcomes=outcomes)
    [(outcome, wall_time)] = outcomes
    assert tools.calls == []
    assert (
        outcome.state == task_pb2.TASK_STATE_FAILED and outcome.stop_reason == task_pb2.STOP_REASON_TOKEN_CAP
    )
    assert "daily tokens" in outcome.message
    assert wall_time == 0.0  # the fixed clock: no time passed, and none is invented


async def test_a_cancel_without_a_reason_says_who_canceled() -> None:
    outcomes: list[Any] = []
    await _run(KEYED, canceled="", outcomes=outcomes)
    assert outcomes[0][0].message == "canceled by its owner"

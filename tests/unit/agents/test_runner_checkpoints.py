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

import pytest

from agentmesh.v1 import task_pb2
from agents.actions import RunOutcome, ToolInvocation
from agents.caller import Caller
from agents.limits import LimitReached
from agents.machine import RunMachine
from agents.model.types import ChatModel, ChatRequest, ModelTurn, TokenUsage, ToolCall
from agents.model.wire import parse_arguments
from agents.observations import ToolObservation
from agents.runner import CONTINUE, StepJournal, ToolGateway, Verdict, drive
from tests.support.waiting import until
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

        self.timeouts: list[float] = []

    async def complete(self, request: ChatRequest, *, timeout: float) -> ModelTurn:
        self.timeouts.append(timeout)
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

    async def checkpoint_last(
        self, step: task_pb2.Step, usage: task_pb2.Usage, artifacts: Sequence[task_pb2.ArtifactUpdate] = ()
    ) -> None:
        await self.checkpoint(step, usage, artifacts)

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


async def _drive(
    run: RunMachine, clock: list[float], *, model: ChatModel, tools: ToolGateway, journal: StepJournal
) -> RunOutcome:
    """`drive` for ("acme", "ada") on the clock the test moves (`clock[0]`)."""
    return await drive(
        run, model=model, tools=tools, journal=journal, caller=Caller("acme", "ada"), clock=lambda: clock[0]
    )


async def _run(
    side_effect: int,
    *,
    open_after: float = 0.05,
    canceled: str | None = None,
    exhausted: LimitReached | None = None,
    outcomes: list[Any] | None = None,
    elapsed: float = 1.0,
    model: TwoTurns | None = None,
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
        model=model or TwoTurns("inventory_reserve"),
        tools=tools,
        journal=journal,
        caller=Caller("acme", "ada"),
        clock=lambda: NOW + elapsed,  # the task was created at NOW: by default well within its deadline
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


async def test_the_model_gets_its_own_timeout_or_the_time_left_of_the_task_if_shorter() -> None:
    """The spec's model timeout is 60 s, the task's deadline 120 s after its creation."""
    early = TwoTurns("inventory_reserve")
    await _run(KEYED, model=early)  # 1 s in: the model's own timeout
    assert early.timeouts == [60.0, 60.0]
    late = TwoTurns("inventory_reserve")
    tools = await _run(KEYED, model=late, elapsed=100.0)  # 20 s left: the task's deadline
    assert late.timeouts == [20.0, 20.0]
    assert [timeout for _, _, timeout in tools.calls] == [20.0]


# -- the background saver: every step once and in order, with the usage so far; failures surface --


class Turns:
    """Scripted model turns; each call lets the loop run (as a network call would); `clock` advances
    2 s per turn; after the last turn it blocks until canceled."""

    model_name = "test-model"

    def __init__(self, turns: list[ModelTurn], clock: list[float]) -> None:
        self.turns = turns
        self.clock = clock
        self.calls = 0

    async def complete(self, request: ChatRequest, *, timeout: float) -> ModelTurn:
        self.calls += 1
        for _ in range(3):
            await asyncio.sleep(0)
        if not self.turns:
            await asyncio.Event().wait()
        self.clock[0] += 2.0
        return self.turns.pop(0)

    async def aclose(self) -> None:
        return None


class RecordingJournal:
    def __init__(
        self,
        fail_with: Exception | None = None,
        gate: asyncio.Event | None = None,
        verdict: Verdict = CONTINUE,
    ) -> None:
        self.saved: list[tuple[int, task_pb2.Usage]] = []
        self.artifacts: dict[int, Sequence[task_pb2.ArtifactUpdate]] = {}  # as handed over, by step
        self.verdict = verdict
        self.last: list[int] = []  # the steps handed over with checkpoint_last
        self.fail_with = fail_with
        self.gate = gate
        self.cancelled = False

    async def checkpoint(
        self, step: task_pb2.Step, usage: task_pb2.Usage, artifacts: Sequence[task_pb2.ArtifactUpdate] = ()
    ) -> Verdict:
        if self.fail_with is not None:
            raise self.fail_with
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        self.saved.append((step.index, usage))
        self.artifacts[step.index] = artifacts
        verdict, self.verdict = self.verdict, CONTINUE  # once
        return verdict

    async def checkpoint_last(
        self, step: task_pb2.Step, usage: task_pb2.Usage, artifacts: Sequence[task_pb2.ArtifactUpdate] = ()
    ) -> None:
        self.last.append(step.index)
        await self.checkpoint(step, usage, artifacts)

    async def settle(self) -> Verdict:
        return CONTINUE


def _read_only_turns(count: int) -> list[ModelTurn]:
    return [
        *(
            ModelTurn("", (_call("inventory_check", f"c{n}"),), TokenUsage(10, 5), "test-model")
            for n in range(count)
        ),
        ModelTurn("done", (), TokenUsage(10, 5), "test-model"),
    ]


async def test_every_step_is_saved_once_in_order_with_the_usage_and_wall_time_so_far() -> None:
    run = machine(offers=[offer("inventory_check", side_effect=READ_ONLY)])
    run.tally.wall_time_s = 5.0  # a resumed task: 5 s spent by earlier attempts
    clock = [NOW + 1]
    journal = RecordingJournal()
    outcome = await _drive(
        run,
        clock,
        model=Turns(_read_only_turns(2), clock),
        tools=RecordingTools(GatedJournal()),
        journal=journal,
    )
    assert outcome.state == task_pb2.TASK_STATE_COMPLETED
    assert [index for index, _ in journal.saved] == list(range(len(run.steps)))
    # The final answer, a model turn, is handed over to be written with the outcome.
    assert journal.last == [len(run.steps) - 1]
    assert run.steps[-1].kind == task_pb2.STEP_KIND_MODEL_CALL
    first = journal.saved[0][1]  # saved after the first turn (2 s of model time)
    assert first.total_tokens == 15 and first.wall_time.ToTimedelta().total_seconds() == 7.0
    assert run.tally.wall_time_s == 5.0 + 6.0  # three turns of 2 s on top of the earlier attempts


async def test_a_task_that_ends_after_a_tool_call_saves_that_step_on_its_own() -> None:
    """Only a model turn waits to be written with the outcome: a task stopped right after a tool
    call (a budget ran out while saving) saves the call's step like any other."""
    run = machine(offers=[offer("inventory_check", side_effect=READ_ONLY)])
    clock = [NOW + 1]
    exhausted = LimitReached(task_pb2.STOP_REASON_TOKEN_CAP, "tokens", "the user's daily tokens are spent")
    journal = RecordingJournal(verdict=Verdict(exhausted=exhausted))

    class SlowTool(RecordingTools):
        async def invoke(
            self, invocation: ToolInvocation, *, caller: Caller, timeout: float
        ) -> ToolObservation:
            # The save of the turn that asked for the call lands (with its verdict) meanwhile.
            await until(lambda: journal.saved, what="the first save", timeout=10)
            return await super().invoke(invocation, caller=caller, timeout=timeout)

    outcome = await _drive(
        run, clock, model=Turns(_read_only_turns(3), clock), tools=SlowTool(GatedJournal()), journal=journal
    )
    assert outcome.stop_reason == task_pb2.STOP_REASON_TOKEN_CAP
    assert run.steps[-1].kind == task_pb2.STEP_KIND_TOOL_CALL
    assert [index for index, _ in journal.saved] == [0, 1]
    assert journal.last == []


async def test_a_failed_save_stops_the_task_at_the_next_step() -> None:
    """Saving runs behind read-only work, but its failure (the attempt fenced off, Redis gone)
    surfaces before the next model call, not after the task did all its work."""
    run = machine(offers=[offer("inventory_check", side_effect=READ_ONLY)])
    clock = [NOW + 1]
    model = Turns(_read_only_turns(5), clock)
    with pytest.raises(RuntimeError, match="fenced"):
        await _drive(
            run,
            clock,
            model=model,
            tools=RecordingTools(GatedJournal()),
            journal=RecordingJournal(fail_with=RuntimeError("fenced")),
        )
    assert model.calls <= 2


async def test_a_canceled_task_cancels_the_save_in_flight() -> None:
    run = machine(offers=[offer("inventory_check", side_effect=READ_ONLY)])
    clock = [NOW + 1]
    journal = RecordingJournal(gate=asyncio.Event())  # never opens
    model = Turns(_read_only_turns(1)[:1], clock)  # one tool-calling turn, then the model hangs
    running = asyncio.create_task(
        drive(
            run,
            model=model,
            tools=RecordingTools(GatedJournal()),
            journal=journal,
            caller=Caller("acme", "ada"),
            clock=lambda: clock[0],
        )
    )
    await until(lambda: model.calls == 2, what="the second model call (a save in flight)", timeout=10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await until(lambda: journal.cancelled, what="the save in flight to be canceled", timeout=10)


class BrokenModel:
    """Fails in a way the runner does not handle (not a ModelError): the error must reach the caller."""

    model_name = "test-model"

    async def complete(self, request: ChatRequest, *, timeout: float) -> ModelTurn:
        raise RuntimeError("the model client is broken")

    async def aclose(self) -> None:
        return None


async def test_a_run_that_fails_before_any_step_raises_its_own_error() -> None:
    """Nothing was kicked for saving yet when the first model call fails: ending the run then
    (there is no save to cancel) must not hide the failure."""
    run = machine(offers=[offer("inventory_check", side_effect=READ_ONLY)])
    journal = GatedJournal()
    with pytest.raises(RuntimeError, match="the model client is broken"):
        await drive(
            run,
            model=BrokenModel(),
            tools=RecordingTools(journal),
            journal=journal,
            caller=Caller("acme", "ada"),
            clock=lambda: NOW + 1,
        )
    assert journal.saved == []


# -- what the tool gets and what its step records; saves that lag behind the whole run --


class ClockedTool:
    """Answers with `result` after `takes` seconds of the test's clock."""

    def __init__(self, clock: list[float], result: ToolObservation, takes: float = 0.0) -> None:
        self.clock = clock
        self.result = result
        self.takes = takes
        self.timeouts: list[float] = []

    async def invoke(self, invocation: ToolInvocation, *, caller: Caller, timeout: float) -> ToolObservation:
        self.timeouts.append(timeout)
        self.clock[0] += self.takes
        return self.result


async def test_a_tool_called_after_the_deadline_passed_gets_no_time() -> None:
    """The deadline (120 s after the task's creation) passes while the turn that asked for a
    side-effecting call is saved: the call is made with a timeout of 0 s, not a moment more (with
    no time left the tool invoker refuses to start the call: nothing is sent past the deadline)."""
    run = machine(offers=[offer("inventory_reserve", side_effect=KEYED)])
    clock = [NOW + 1]

    class SlowJournal(RecordingJournal):
        async def checkpoint(
            self,
            step: task_pb2.Step,
            usage: task_pb2.Usage,
            artifacts: Sequence[task_pb2.ArtifactUpdate] = (),
        ) -> Verdict:
            clock[0] += 200.0  # a save that took 200 s of the task's time
            return await super().checkpoint(step, usage, artifacts)

    tool = ClockedTool(clock, ToolObservation(task_pb2.TOOL_OUTCOME_OK, result={"ok": True}))
    outcome = await _drive(run, clock, model=TwoTurns("inventory_reserve"), tools=tool, journal=SlowJournal())
    assert tool.timeouts == [0.0]
    assert outcome.stop_reason == task_pb2.STOP_REASON_DEADLINE


async def test_a_tool_step_records_how_long_the_call_took() -> None:
    run = machine(offers=[offer("inventory_check", side_effect=READ_ONLY)])
    clock = [NOW + 1]
    tool = ClockedTool(clock, ToolObservation(task_pb2.TOOL_OUTCOME_OK, result={"ok": True}), takes=3.0)
    await _drive(run, clock, model=TwoTurns("inventory_check"), tools=tool, journal=RecordingJournal())
    step = run.steps[1]
    assert step.kind == task_pb2.STEP_KIND_TOOL_CALL
    assert step.start_time.ToDatetime().timestamp() == NOW + 1
    assert step.duration.ToTimedelta().total_seconds() == 3.0


async def test_a_failed_tool_call_is_told_to_the_model_and_the_task_goes_on() -> None:
    run = machine(offers=[offer("inventory_check", side_effect=READ_ONLY)])
    clock = [NOW + 1]
    failed = ToolObservation(task_pb2.TOOL_OUTCOME_ERROR, status_code="UNAVAILABLE", message="inventory down")
    outcome = await _drive(
        run,
        clock,
        model=TwoTurns("inventory_check"),
        tools=ClockedTool(clock, failed),
        journal=RecordingJournal(),
    )
    assert outcome.state == task_pb2.TASK_STATE_COMPLETED
    assert [step.outcome for step in run.steps if step.kind == task_pb2.STEP_KIND_TOOL_CALL] == [
        task_pb2.TOOL_OUTCOME_ERROR
    ]


def _artifact(artifact_id: str) -> task_pb2.ArtifactUpdate:
    return task_pb2.ArtifactUpdate(artifact=task_pb2.Artifact(artifact_id=artifact_id), last_chunk=True)


async def test_saves_lagging_behind_the_whole_run_keep_every_step_with_its_artifacts() -> None:
    """No save completes before the task has its outcome: then every step but the final answer
    is saved with the artifacts it delivered, and the final answer is handed over with its own
    artifacts and the task's whole usage."""
    run = machine(offers=[offer("inventory_check", side_effect=READ_ONLY)])
    clock = [NOW + 1]
    listed, answered = _artifact("inventory_check.1"), _artifact("answer.1")
    turns = _read_only_turns(1)
    turns[-1] = ModelTurn("done", (), TokenUsage(10, 5), "test-model", artifacts=(answered,))
    tool_result = ToolObservation(task_pb2.TOOL_OUTCOME_OK, result={"ok": True}, artifacts=(listed,))
    gate = asyncio.Event()
    journal = RecordingJournal(gate=gate)

    async def open_once_finished() -> None:
        # The outcome is set by the final answer, and the runner goes on to its end without
        # yielding: the gate opens while the runner waits for the saves in flight.
        await until(lambda: run.outcome is not None, what="the task's outcome", timeout=10)
        gate.set()

    opener = asyncio.create_task(open_once_finished())
    outcome = await _drive(
        run, clock, model=Turns(turns, clock), tools=ClockedTool(clock, tool_result), journal=journal
    )
    await opener
    assert outcome.state == task_pb2.TASK_STATE_COMPLETED
    assert [step.kind for step in run.steps] == [
        task_pb2.STEP_KIND_MODEL_CALL,
        task_pb2.STEP_KIND_TOOL_CALL,
        task_pb2.STEP_KIND_MODEL_CALL,
    ]
    assert [index for index, _ in journal.saved] == [0, 1, 2]
    assert journal.last == [2]
    assert journal.artifacts == {0: [], 1: [listed], 2: [answered]}
    last_usage = journal.saved[-1][1]
    assert isinstance(last_usage, task_pb2.Usage)
    assert last_usage.total_tokens == 30 and last_usage.wall_time.ToTimedelta().total_seconds() == 4.0

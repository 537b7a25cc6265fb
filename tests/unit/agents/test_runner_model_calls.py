"""The runner's model calls (agents/runner.py `_model_call`): what the model receives, and what the
machine is told when it answers or fails — the step's start and duration (they feed the task's
usage and wall time), the error itself, and a failure at the deadline read as the deadline.

The clock is a list the scripted model moves: a call "takes" exactly the seconds the test says.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agentmesh.kit import metrics
from agentmesh.v1 import task_pb2
from agents.actions import RunOutcome, ToolInvocation
from agents.caller import Caller
from agents.machine import RunMachine
from agents.model.types import (
    ChatRequest,
    ChatRole,
    ModelError,
    ModelTurn,
    ModelUnavailable,
    TokenUsage,
    ToolCall,
)
from agents.model.wire import parse_arguments
from agents.observations import ToolObservation
from agents.runner import CONTINUE, Verdict, drive
from tests.unit.agents.test_run_machine import NOW, machine, offer

DEADLINE = NOW + 120.0  # the budget of `machine()`: 120 s from the task's creation at NOW


def _call(name: str, call_id: str) -> ToolCall:
    text, parsed, error = parse_arguments(json.dumps({"sku": "A"}))
    return ToolCall(call_id, name, text, parsed, error)


class ScriptedModel:
    """Answers (or raises) from a script; each call records the request it got and moves the clock
    by its own number of seconds first."""

    model_name = "test-model"

    def __init__(self, clock: list[float], script: list[tuple[float, ModelTurn | ModelError]]) -> None:
        self.clock = clock
        self.script = script
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest, *, timeout: float) -> ModelTurn:
        self.requests.append(request)
        seconds, reply = self.script.pop(0)
        self.clock[0] += seconds
        if isinstance(reply, ModelError):
            raise reply
        return reply

    async def aclose(self) -> None:
        return None


class Journal:
    """Stores every step it is handed, at once."""

    def __init__(self) -> None:
        self.steps: list[task_pb2.Step] = []

    async def checkpoint(
        self, step: task_pb2.Step, usage: task_pb2.Usage, artifacts: Sequence[task_pb2.ArtifactUpdate] = ()
    ) -> Verdict:
        self.steps.append(step)
        return CONTINUE

    async def checkpoint_last(
        self, step: task_pb2.Step, usage: task_pb2.Usage, artifacts: Sequence[task_pb2.ArtifactUpdate] = ()
    ) -> None:
        self.steps.append(step)

    async def settle(self) -> Verdict:
        return CONTINUE


class Tools:
    async def invoke(self, invocation: ToolInvocation, *, caller: Caller, timeout: float) -> ToolObservation:
        return ToolObservation(task_pb2.TOOL_OUTCOME_OK, result={"in_stock": 7})


async def _drive(run: RunMachine, model: ScriptedModel, clock: list[float], journal: Journal) -> RunOutcome:
    return await drive(
        run,
        model=model,
        tools=Tools(),
        journal=journal,
        caller=Caller("acme", "ada"),
        clock=lambda: clock[0],
    )


def _seconds(step: task_pb2.Step) -> tuple[float, float]:
    """When the step started (seconds after NOW) and how long it took."""
    return step.start_time.ToNanoseconds() / 1e9 - NOW, step.duration.ToNanoseconds() / 1e9


async def test_the_model_gets_the_request_the_machine_built_for_each_turn() -> None:
    run = machine(offers=[offer("inventory_check", side_effect=1)])
    clock = [NOW + 1]
    model = ScriptedModel(
        clock,
        [
            (2.0, ModelTurn("", (_call("inventory_check", "c1"),), TokenUsage(10, 5), "test-model")),
            (2.0, ModelTurn("done", (), TokenUsage(10, 5), "test-model")),
        ],
    )
    outcome = await _drive(run, model, clock, Journal())
    assert outcome.final_answer == "done"
    first, second = model.requests
    assert [(m.role, m.content) for m in first.messages] == [
        (ChatRole.SYSTEM, "You fulfil orders."),
        (ChatRole.USER, "ship ORD-1"),
    ]
    assert [t["function"]["name"] for t in first.tools] == ["inventory_check"]
    # The second turn sees the call it asked for and the tool's answer to it.
    roles = [m.role for m in second.messages]
    assert roles == [ChatRole.SYSTEM, ChatRole.USER, ChatRole.ASSISTANT, ChatRole.TOOL]
    assert second.messages[2].tool_calls[0].call_id == "c1"
    assert second.messages[3].tool_call_id == "c1" and "7" in second.messages[3].content


async def test_an_answered_turn_is_recorded_with_when_it_started_and_how_long_it_took() -> None:
    run = machine(offers=[offer("inventory_check", side_effect=1)])
    run.tally.wall_time_s = 5.0  # a resumed task: 5 s spent by earlier attempts
    clock = [NOW + 1]
    model = ScriptedModel(
        clock,
        [
            (2.0, ModelTurn("", (_call("inventory_check", "c1"),), TokenUsage(10, 5), "test-model")),
            (3.0, ModelTurn("done", (), TokenUsage(10, 5), "test-model")),
        ],
    )
    journal = Journal()
    outcome = await _drive(run, model, clock, journal)
    assert outcome.state == task_pb2.TASK_STATE_COMPLETED
    model_steps = [s for s in journal.steps if s.kind == task_pb2.STEP_KIND_MODEL_CALL]
    assert [_seconds(step) for step in model_steps] == [(1.0, 2.0), (3.0, 3.0)]
    assert run.tally.wall_time_s == 5.0 + 5.0


async def test_a_failed_model_call_fails_the_task_and_is_recorded_with_its_start_and_duration() -> None:
    run = machine(offers=[offer("inventory_check", side_effect=1)])
    clock = [NOW + 1]
    model = ScriptedModel(clock, [(4.0, ModelUnavailable("upstream 503", status=503))])
    journal = Journal()
    outcome = await _drive(run, model, clock, journal)
    assert outcome.state == task_pb2.TASK_STATE_FAILED
    assert outcome.stop_reason == task_pb2.STOP_REASON_MODEL_ERROR
    assert outcome.message == "the model unavailable: upstream 503"
    assert outcome.error.reason == "DEPENDENCY_UNAVAILABLE"
    assert dict(outcome.error.metadata) == {"model": "test-model", "http_status": "503"}
    [step] = journal.steps
    assert step.kind == task_pb2.STEP_KIND_MODEL_CALL
    assert step.status_code == "DEPENDENCY_UNAVAILABLE"
    assert step.summary == "model call failed: ModelUnavailable: upstream 503"
    assert _seconds(step) == (1.0, 4.0)
    assert run.tally.wall_time_s == 4.0


async def test_a_model_call_that_fails_exactly_at_the_deadline_stops_the_task_for_its_deadline() -> None:
    """The call was cut off by the task's deadline (its timeout was the time left): the task stops
    with DEADLINE, not as a model error; at the deadline itself counts as past it."""
    run = machine(offers=[offer("inventory_check", side_effect=1)])
    clock = [DEADLINE - 20.0]
    model = ScriptedModel(clock, [(20.0, ModelUnavailable("timed out after 20 s"))])
    journal = Journal()
    outcome = await _drive(run, model, clock, journal)
    assert clock[0] == DEADLINE
    assert outcome.state == task_pb2.TASK_STATE_FAILED
    assert outcome.stop_reason == task_pb2.STOP_REASON_DEADLINE
    assert outcome.error.reason == "BUDGET_EXHAUSTED"
    assert journal.steps == []  # no failed model turn is recorded for an interrupted call


async def test_a_model_call_that_fails_just_before_the_deadline_is_a_model_error() -> None:
    run = machine(offers=[offer("inventory_check", side_effect=1)])
    clock = [DEADLINE - 20.0]
    model = ScriptedModel(clock, [(19.5, ModelUnavailable("upstream 503", status=503))])
    outcome = await _drive(run, model, clock, Journal())
    assert outcome.stop_reason == task_pb2.STOP_REASON_MODEL_ERROR


def _tool_labels() -> dict[str, float]:
    """The `tool` label of every sample of the tool-calls counter, with its count."""
    counts: dict[str, float] = {}
    for family in metrics.AGENT_TOOL_CALLS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                tool = sample.labels["tool"]
                counts[tool] = counts.get(tool, 0.0) + sample.value
    return counts


async def test_a_tool_name_the_model_invents_is_counted_as_unknown_not_as_a_new_label() -> None:
    """A model under prompt injection can ask for any name; the metric's label set must stay the
    domain's allowed tools (plus "unknown"), or each invented name grows the agent's memory."""
    run = machine(offers=[offer("inventory_check", side_effect=1)])
    clock = [NOW + 1]
    invented = "tool_the_model_made_up_7f3a"
    model = ScriptedModel(
        clock,
        [
            (1.0, ModelTurn("", (_call(invented, "c1"),), TokenUsage(10, 5), "test-model")),
            (1.0, ModelTurn("", (_call("inventory_check", "c2"),), TokenUsage(10, 5), "test-model")),
            (1.0, ModelTurn("done", (), TokenUsage(10, 5), "test-model")),
        ],
    )
    before = _tool_labels()
    outcome = await _drive(run, model, clock, Journal())
    after = _tool_labels()
    assert outcome.final_answer == "done"
    assert invented not in after
    assert after.get("unknown", 0.0) == before.get("unknown", 0.0) + 1
    assert after.get("inventory_check", 0.0) == before.get("inventory_check", 0.0) + 1

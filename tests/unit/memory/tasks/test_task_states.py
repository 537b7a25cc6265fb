from __future__ import annotations

import itertools

import pytest

from agentmesh.kit.errors import FailedPrecondition
from agentmesh.v1 import task_pb2
from memory.tasks import states
from memory.tasks.states import (
    CANCELED,
    COMPLETED,
    FAILED,
    INPUT_REQUIRED,
    REJECTED,
    SUBMITTED,
    TERMINAL_STATES,
    WORKING,
)

ALL_STATES = [v for v in task_pb2.TaskState.values() if v != task_pb2.TASK_STATE_UNSPECIFIED]


def test_the_documented_edges_are_allowed() -> None:
    allowed = {
        (SUBMITTED, WORKING),
        (SUBMITTED, CANCELED),
        (SUBMITTED, REJECTED),
        (WORKING, INPUT_REQUIRED),
        (WORKING, COMPLETED),
        (WORKING, FAILED),
        (WORKING, CANCELED),
        (WORKING, REJECTED),
        (INPUT_REQUIRED, WORKING),
        (INPUT_REQUIRED, CANCELED),
        (INPUT_REQUIRED, FAILED),
    }
    for current, target in itertools.product(ALL_STATES, repeat=2):
        assert states.can_transition(current, target) == ((current, target) in allowed), (
            current,
            target,
        )


def test_every_state_has_an_entry() -> None:
    assert set(states.TRANSITIONS) == set(ALL_STATES)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_states_never_change(terminal: int) -> None:
    assert states.is_terminal(terminal)
    assert not states.TRANSITIONS[terminal]


def test_completed_to_working_is_refused_naming_the_state() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        states.check_transition("t-1", COMPLETED, WORKING)
    error = caught.value
    assert error.reason == "INVALID_STATE"
    assert error.metadata == {"task_id": "t-1", "state": "COMPLETED", "requested_state": "WORKING"}
    assert "COMPLETED" in error.message and "finished" in error.message


def test_non_terminal_refusal_says_what_was_asked() -> None:
    with pytest.raises(FailedPrecondition, match="SUBMITTED cannot become INPUT_REQUIRED"):
        states.check_transition("t-1", SUBMITTED, INPUT_REQUIRED)


def test_only_dead_lettered_failures_can_be_redriven() -> None:
    assert states.can_redrive(FAILED, task_pb2.STOP_REASON_DEAD_LETTERED)
    assert not states.can_redrive(FAILED, task_pb2.STOP_REASON_TOOL_ERROR)
    assert not states.can_redrive(COMPLETED, task_pb2.STOP_REASON_DEAD_LETTERED)
    with pytest.raises(FailedPrecondition, match="only dead-lettered tasks"):
        states.check_redrive("t", CANCELED, task_pb2.STOP_REASON_CANCELED)


def test_state_names() -> None:
    assert states.state_name(INPUT_REQUIRED) == "INPUT_REQUIRED"
    assert states.state_name(99) == "99"

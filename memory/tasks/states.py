"""The task state machine (pure): which state may follow which.

    SUBMITTED -> WORKING -> COMPLETED | FAILED | CANCELED | REJECTED
    SUBMITTED -> REJECTED | CANCELED
    WORKING  <-> INPUT_REQUIRED -> CANCELED | FAILED

COMPLETED, FAILED, CANCELED and REJECTED are terminal. The one edge out of a
terminal state is the operator's *redrive* of a dead-lettered task (FAILED with
STOP_REASON_DEAD_LETTERED -> SUBMITTED), and only a redrive (memory/tasks/dead_letters.py) takes it.
Staying in WORKING (a recovered attempt, a checkpoint) is not a transition.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentmesh.kit.errors import FailedPrecondition
from agentmesh.v1 import errors_pb2, task_pb2

SUBMITTED = task_pb2.TASK_STATE_SUBMITTED
WORKING = task_pb2.TASK_STATE_WORKING
INPUT_REQUIRED = task_pb2.TASK_STATE_INPUT_REQUIRED
COMPLETED = task_pb2.TASK_STATE_COMPLETED
FAILED = task_pb2.TASK_STATE_FAILED
CANCELED = task_pb2.TASK_STATE_CANCELED
REJECTED = task_pb2.TASK_STATE_REJECTED

TERMINAL_STATES: frozenset[int] = frozenset({COMPLETED, FAILED, CANCELED, REJECTED})

TRANSITIONS: Mapping[int, frozenset[int]] = {
    SUBMITTED: frozenset({WORKING, CANCELED, REJECTED}),
    # WORKING -> REJECTED: the agent looked at the task and refused it (an A2A state).
    WORKING: frozenset({INPUT_REQUIRED, COMPLETED, FAILED, CANCELED, REJECTED}),
    INPUT_REQUIRED: frozenset({WORKING, CANCELED, FAILED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELED: frozenset(),
    REJECTED: frozenset(),
}


def state_name(state: int) -> str:
    """`TASK_STATE_COMPLETED` -> `COMPLETED`; unknown numbers are shown as numbers."""
    try:
        return task_pb2.TaskState.Name(state).removeprefix("TASK_STATE_")  # type: ignore[arg-type]
    except ValueError:
        return str(state)


def is_terminal(state: int) -> bool:
    return state in TERMINAL_STATES


def can_transition(current: int, target: int) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def check_transition(task_id: str, current: int, target: int) -> None:
    """Raise FAILED_PRECONDITION (INVALID_STATE, metadata `state`) unless current -> target is allowed."""
    if can_transition(current, target):
        return
    now, wanted = state_name(current), state_name(target)
    detail = "it has finished" if is_terminal(current) else f"{now} cannot become {wanted}"
    raise FailedPrecondition(
        f"task {task_id} is {now}; {detail}",
        reason=errors_pb2.ERROR_REASON_INVALID_STATE,
        metadata={"task_id": task_id, "state": now, "requested_state": wanted},
    )


def can_redrive(state: int, stop_reason: int) -> bool:
    return state == FAILED and stop_reason == task_pb2.STOP_REASON_DEAD_LETTERED


def check_redrive(task_id: str, state: int, stop_reason: int) -> None:
    if not can_redrive(state, stop_reason):
        raise FailedPrecondition(
            f"task {task_id} is {state_name(state)} and was not dead-lettered; only dead-lettered tasks "
            "can be redriven",
            reason=errors_pb2.ERROR_REASON_INVALID_STATE,
            metadata={"task_id": task_id, "state": state_name(state)},
        )

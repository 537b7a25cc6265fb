"""memory.tasks.effects: which side effects a task's steps record, for dead letters and `show`."""

from __future__ import annotations

import hashlib
import json

from agentmesh.v1 import task_pb2, tool_options_pb2
from memory.tasks.effects import (
    COMPENSATED,
    COMPENSATION_FAILED,
    COMPLETED,
    IN_DOUBT,
    json_arguments_digest,
    task_effects,
)

KEYED = tool_options_pb2.SIDE_EFFECT_KEYED
READ_ONLY = tool_options_pb2.SIDE_EFFECT_READ_ONLY


def model(index: int, *calls: tuple[str, str, str]) -> task_pb2.Step:
    record = {"tool_calls": [{"id": i, "name": n, "arguments": a} for i, n, a in calls]}
    return task_pb2.Step(index=index, kind=task_pb2.STEP_KIND_MODEL_CALL, result_json=json.dumps(record))


def tool(
    index: int, name: str, call_id: str, side_effect: int, outcome: int, result: object = None
) -> task_pb2.Step:
    return task_pb2.Step(
        index=index,
        kind=task_pb2.STEP_KIND_TOOL_CALL,
        tool_name=name,
        call_id=call_id,
        arguments_json='{"b": 1, "a": 2}',
        result_json=json.dumps({"status": "OK", "result": result}),
        outcome=outcome,  # type: ignore[arg-type]
        side_effect=side_effect,  # type: ignore[arg-type]
        summary=f"{name}: done",
    )


def test_completed_effects_in_doubt_calls_and_compensations() -> None:
    ok, error = task_pb2.TOOL_OUTCOME_OK, task_pb2.TOOL_OUTCOME_ERROR
    steps = [
        model(0, ("c1", "inventory_check", "{}"), ("c2", "inventory_reserve", '{"sku":"A"}')),
        tool(1, "inventory_check", "c1", READ_ONLY, ok),  # reads are no effect
        tool(2, "inventory_reserve", "c2", KEYED, ok, {"reservation_id": "res_1"}),
        model(3, ("c3", "payments_refund", "{}"), ("c4", "email_send", '{"to": "x"}')),
        tool(4, "payments_refund", "c3", KEYED, error),  # failed: no effect
        task_pb2.Step(
            index=5,
            kind=task_pb2.STEP_KIND_COMPENSATION,
            tool_name="inventory_release",
            compensated_step=2,
            outcome=ok,
            summary="undo step 2 (inventory_reserve): inventory_release: OK",
        ),
    ]
    effects = task_effects("t1", steps)
    assert [(e.step, e.tool, e.status) for e in effects] == [
        (2, "inventory_reserve", COMPENSATED),
        # Asked for, never checkpointed: it was sent as step 5 (the compensation came after it
        # and takes no index from it), so its key is t1:5.
        (5, "email_send", IN_DOUBT),
    ]
    reserve, email = effects
    assert reserve.side_effect == "KEYED" and reserve.idempotency_key == "t1:2"
    assert reserve.result == '{"reservation_id":"res_1"}'
    assert reserve.arguments_sha256 == hashlib.sha256(b'{"a":2,"b":1}').hexdigest()
    assert "inventory_release at step 5" in reserve.compensation
    assert email.idempotency_key == "t1:5" and email.side_effect == ""
    assert email.arguments_sha256 == json_arguments_digest('{"to":"x"}')


def test_statuses_of_unknown_outcomes_and_failed_compensations() -> None:
    steps = [
        model(0, ("c1", "x_do", "{}")),
        tool(1, "x_do", "c1", tool_options_pb2.SIDE_EFFECT_NON_IDEMPOTENT, task_pb2.TOOL_OUTCOME_UNKNOWN),
        model(2, ("c2", "y_do", "{}")),
        tool(3, "y_do", "c2", KEYED, task_pb2.TOOL_OUTCOME_DEDUPLICATED),
        task_pb2.Step(
            index=4,
            kind=task_pb2.STEP_KIND_COMPENSATION,
            compensated_step=3,
            outcome=task_pb2.TOOL_OUTCOME_ERROR,
        ),
        model(5),
    ]
    assert [(e.step, e.status) for e in task_effects("t", steps)] == [(1, IN_DOUBT), (3, COMPENSATION_FAILED)]
    assert [e.status for e in task_effects("t", steps[:4])] == [IN_DOUBT, COMPLETED]

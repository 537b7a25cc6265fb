from __future__ import annotations

import pytest

from agentmesh.kit.errors import InvalidArgument
from agentmesh.kit.validation import DOMAIN_SLUG, OPAQUE_ID, TOOL_NAME, Violations, undefined_enum_violations
from agentmesh.v1 import agent_service_pb2, task_pb2


def test_collects_every_violation_then_raises_once() -> None:
    v = Violations()
    v.required("", "instruction")
    v.max_length("é" * 10, 10, "session_id")  # 20 bytes in UTF-8
    v.max_items([1, 2, 3], 2, "parts")
    v.matches("Refunds!", DOMAIN_SLUG, "domain", "domain slug")
    with pytest.raises(InvalidArgument) as caught:
        v.raise_if_any()
    assert [x.field for x in caught.value.violations] == ["instruction", "session_id", "parts", "domain"]
    assert caught.value.violations[1].description == "is 20 bytes; at most 10 allowed"
    assert "instruction, session_id, parts, domain" in caught.value.message


def test_nothing_raised_when_valid() -> None:
    v = Violations()
    assert v.required("x", "instruction")
    assert v.in_range(3, "n", low=0, high=5)
    v.raise_if_any()
    assert not v


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (DOMAIN_SLUG, ["refunds", "order-fulfillment", "a"], ["Refunds", "1abc", "a" * 32, "", "a_b"]),
        (TOOL_NAME, ["payments_refund", "crm_get_customer", "x"], ["Payments", "_x", "a-b", "a" * 65]),
        (OPAQUE_ID, ["s-1", "user:42.session_7"], ["", "has space", "x" * 129]),
    ],
)
def test_name_patterns(pattern, good, bad) -> None:  # type: ignore[no-untyped-def]
    assert all(pattern.fullmatch(x) for x in good)
    assert not any(pattern.fullmatch(x) for x in bad)


def test_undefined_enums_found_at_any_depth() -> None:
    request = agent_service_pb2.ListTasksRequest(states=[task_pb2.TASK_STATE_WORKING, 99], view=7)  # type: ignore[list-item]
    found = {v.field for v in undefined_enum_violations(request)}
    assert found == {"states[1]", "view"}

    nested = agent_service_pb2.RunResponse(
        task=task_pb2.Task(steps=[task_pb2.Step(kind=task_pb2.STEP_KIND_TOOL_CALL), task_pb2.Step(kind=55)])
    )  # type: ignore[arg-type]
    assert [v.field for v in undefined_enum_violations(nested)] == ["task.steps[1].kind"]


def test_defined_enums_pass() -> None:
    request = agent_service_pb2.ListTasksRequest(
        states=[task_pb2.TASK_STATE_COMPLETED], view=task_pb2.TASK_VIEW_FULL
    )
    assert undefined_enum_violations(request) == []

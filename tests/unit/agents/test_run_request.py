"""Run's input checks, the caller resolver and the agent card (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from agentmesh.kit.auth import Principal
from agentmesh.kit.errors import InvalidArgument, Unauthenticated
from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.caller import Caller, caller_of_task, resolve_caller
from agents.card import build_card, card_json
from agents.requests import MAX_INSTRUCTION_BYTES, check_run_request, check_session_id
from agents.spec import load_spec

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_spec(ROOT / "agents" / "domains" / "fulfillment.yaml")


def fields(request: agent_service_pb2.RunRequest) -> set[str]:
    with pytest.raises(InvalidArgument) as caught:
        check_run_request(SPEC, request)
    assert caught.value.reason == "INVALID_REQUEST"
    return {v.field for v in caught.value.violations}


def test_valid_request_gets_the_default_budget() -> None:
    budget = check_run_request(SPEC, agent_service_pb2.RunRequest(instruction="ship ORD-1"))
    assert budget.max_iterations == SPEC.default_limits.max_iterations


def test_empty_and_blank_instruction() -> None:
    assert fields(agent_service_pb2.RunRequest()) == {"instruction"}
    assert fields(agent_service_pb2.RunRequest(instruction="   \n")) == {"instruction"}


def test_oversize_instruction_names_the_limit() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_run_request(SPEC, agent_service_pb2.RunRequest(instruction="x" * (MAX_INSTRUCTION_BYTES + 1)))
    assert "at most 32768" in caught.value.violations[0].description


def test_bad_ids_labels_and_parts_are_all_named_at_once() -> None:
    big = struct_pb2.Struct()
    big.update({"blob": "x" * 40_000})
    request = agent_service_pb2.RunRequest(
        instruction="ok",
        session_id="bad session!",
        request_id="x" * 200,
        labels={"Bad Key": "v", **{f"k{i}": "v" for i in range(3)}},
        parts=[
            task_pb2.Part(),
            task_pb2.Part(text="y" * 40_000),
            task_pb2.Part(data=big),
            task_pb2.Part(file=task_pb2.FileBytes(name="a", content=b"z" * (1024 * 1024 + 1))),
            task_pb2.Part(file_uri=task_pb2.FileUri(uri="file:///etc/passwd")),
        ],
    )
    assert fields(request) == {
        "session_id",
        "request_id",
        "labels['Bad Key']",
        "parts[0]",
        "parts[1].text",
        "parts[2].data",
        "parts[3].file.content",
        "parts[4].file_uri.uri",
    }


def test_too_many_parts_and_labels() -> None:
    request = agent_service_pb2.RunRequest(
        instruction="ok",
        parts=[task_pb2.Part(text="a")] * 33,
        labels={f"k{i}": "v" for i in range(17)},
    )
    assert fields(request) == {"parts", "labels"}


def test_limits_above_caps_after_fields() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_run_request(
            SPEC, agent_service_pb2.RunRequest(instruction="ok", limits=task_pb2.Limits(max_tool_calls=1000))
        )
    assert caught.value.reason == "LIMIT_ABOVE_CAP" and caught.value.metadata["cap"] == "max_tool_calls"


def test_session_id_check() -> None:
    check_session_id("s-1")
    check_session_id("", required=False)
    with pytest.raises(InvalidArgument):
        check_session_id("")
    with pytest.raises(InvalidArgument):
        check_session_id("a/b")


def test_the_caller_comes_from_the_verified_principal_only() -> None:
    with pytest.raises(Unauthenticated):
        resolve_caller(None)
    principal = Principal(
        subject="ada", tenant="acme", scopes=frozenset({"a:b"}), depth=2, actor="agent:refunds"
    )
    caller = resolve_caller(principal)
    assert caller == Caller("acme", "ada", 2, frozenset({"a:b"}), "agent:refunds")
    assert caller.principal().depth == 2 and caller.principal().subject == "ada"


@pytest.mark.parametrize(
    "principal",
    [
        Principal(subject="ada", tenant="acme", depth=1),  # delegated, but names no acting agent
        Principal(subject="ada", tenant="acme", actor="service:x"),  # acted for by something not an agent
    ],
)
def test_a_delegation_without_an_acting_agent_is_unauthenticated(principal: Principal) -> None:
    with pytest.raises(Unauthenticated):
        resolve_caller(principal)


def test_a_task_keeps_its_callers_authority_in_reserved_labels() -> None:
    caller = Caller("acme", "ada", 1, frozenset({"payments:refund", "crm:read"}), "agent:refunds")
    task = task_pb2.Task(tenant="acme", owner="ada", labels=caller.labels())
    assert caller_of_task(task) == caller
    assert all(key.startswith("agentmesh.") for key in caller.labels())
    insecure = Caller("t", "u", authenticated=False)
    assert caller_of_task(task_pb2.Task(tenant="t", owner="u", labels=insecure.labels())) == insecure


def test_card_carries_caps_tools_and_skills() -> None:
    card = build_card(SPEC, endpoint="localhost:50062", http_url="http://localhost:51062", model="m")
    assert card.domain == "fulfillment" and card.caps.max_iterations == SPEC.caps.max_iterations
    assert card.caps.deadline.seconds == 120 and card.default_limits.deadline.seconds == 60
    assert [t.name for t in card.tools] == list(SPEC.tool_names)
    assert card.skills[0].skill_id == "fulfill-order" and card.approval_timeout.seconds == 3600
    document = card_json(card)
    assert document["endpoint"] == "localhost:50062" and document["maxDelegationDepth"] == 2

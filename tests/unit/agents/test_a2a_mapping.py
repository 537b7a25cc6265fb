"""A2A ↔ mesh mapping: one task model, two protocols (pure)."""

from __future__ import annotations

import json

import pytest
from a2a.types import a2a_pb2 as a2a
from google.protobuf import struct_pb2

from agentmesh.kit.errors import InvalidArgument
from agentmesh.v1 import task_pb2
from agents.a2a.mapping import (
    FINAL_STATES,
    STATE_FROM_A2A,
    STATE_TO_A2A,
    list_filter,
    part_to_a2a,
    stream_responses,
    submit_request,
    task_to_a2a,
)


def message(*parts: a2a.Part, message_id: str = "tck-complete-task-1", context: str = "ctx-1") -> a2a.Message:
    return a2a.Message(message_id=message_id, context_id=context, role=a2a.ROLE_USER, parts=list(parts))


def test_every_mesh_state_has_one_a2a_state_and_back() -> None:
    mesh_states = [s for s in task_pb2.TaskState.values() if s != task_pb2.TASK_STATE_UNSPECIFIED]
    assert sorted(STATE_TO_A2A) == sorted(mesh_states)
    assert all(STATE_FROM_A2A[STATE_TO_A2A[s]] == s for s in mesh_states)
    assert a2a.TASK_STATE_INPUT_REQUIRED in FINAL_STATES and a2a.TASK_STATE_WORKING not in FINAL_STATES


def test_a_message_becomes_a_submit_request_keyed_by_its_message_id() -> None:
    data = struct_pb2.Value()
    data.struct_value.update({"order": "ORD-1"})
    request = submit_request(
        message(
            a2a.Part(text="Refund order ORD-1"),
            a2a.Part(raw=b"%PDF", filename="receipt.pdf", media_type="application/pdf"),
            a2a.Part(url="https://example.com/r.png", filename="r.png", media_type="image/png"),
            a2a.Part(data=data),
            a2a.Part(data=struct_pb2.Value(number_value=3)),
        )
    )
    assert request.instruction == "Refund order ORD-1"
    assert request.session_id == "ctx-1" and request.request_id == "tck-complete-task-1"
    kinds = [p.WhichOneof("kind") for p in request.parts]
    assert kinds == ["file", "file_uri", "data", "data"]
    assert request.parts[0].file.content == b"%PDF" and request.parts[1].file_uri.media_type == "image/png"
    assert dict(request.parts[2].data) == {"order": "ORD-1"}
    # Parts come back as they went in, a scalar data value included.
    assert part_to_a2a(request.parts[3]).data.number_value == 3
    assert part_to_a2a(request.parts[0]).raw == b"%PDF"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (message(), "message.parts"),
        (message(a2a.Part(text="hi"), message_id=""), "message.message_id"),
        (message(a2a.Part()), "message.parts[0]"),
        (message(a2a.Part(raw=b"x")), "message.parts"),  # no text at all
        (message(*[a2a.Part(text="x")] * 65), "message.parts"),
        (message(a2a.Part(text="x" * 40_000)), "message.parts"),
    ],
)
def test_invalid_messages_name_the_field(bad: a2a.Message, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        submit_request(bad)
    assert field in {v.field for v in info.value.violations}
    assert info.value.reason == "INVALID_PARAMS"


def test_a_task_reads_the_same_over_a2a() -> None:
    task = task_pb2.Task(
        task_id="t-1",
        session_id="ctx-1",
        state=task_pb2.TASK_STATE_COMPLETED,
        instruction="say hello",
        final_answer="Hello from TCK",
        request_id="tck-complete-task-1",
        artifacts=[task_pb2.Artifact(artifact_id="a-1", name="note", parts=[task_pb2.Part(text="body")])],
    )
    view = task_to_a2a(task)
    assert (view.id, view.context_id, view.status.state) == ("t-1", "ctx-1", a2a.TASK_STATE_COMPLETED)
    assert (
        view.status.message.parts[0].text == "Hello from TCK" and view.status.message.role == a2a.ROLE_AGENT
    )
    assert [m.role for m in view.history] == [a2a.ROLE_USER, a2a.ROLE_AGENT]
    assert view.history[0].message_id == "tck-complete-task-1"
    assert view.artifacts[0].parts[0].text == "body"
    assert len(task_to_a2a(task, history_length=1).history) == 1
    assert len(task_to_a2a(task, history_length=0).history) == 0


def test_the_history_tells_an_input_required_exchange_in_order() -> None:
    def model(record: dict[str, object], index: int) -> task_pb2.Step:
        return task_pb2.Step(index=index, kind=task_pb2.STEP_KIND_MODEL_CALL, result_json=json.dumps(record))

    task = task_pb2.Task(
        task_id="t-2",
        session_id="ctx-2",
        state=task_pb2.TASK_STATE_COMPLETED,
        instruction="book it",
        final_answer="Booked for Ada",
        request_id="tck-input-required-1",
        steps=[
            model({"content": "", "tool_calls": [{"id": "c1", "name": "lookup"}]}, 0),
            task_pb2.Step(index=1, kind=task_pb2.STEP_KIND_TOOL_CALL, result_json='{"found": 1}'),
            model({"content": "For whom?", "tool_calls": [], "reply": "input_required"}, 2),
            task_pb2.Step(
                index=3,
                kind=task_pb2.STEP_KIND_USER_INPUT,
                result_json='{"text": "Ada", "request_id": "m-2"}',
            ),
            model({"content": "Booked for Ada", "tool_calls": []}, 4),
        ],
    )
    history = task_to_a2a(task).history
    assert [(m.role, m.parts[0].text) for m in history] == [
        (a2a.ROLE_USER, "book it"),
        (a2a.ROLE_AGENT, "For whom?"),
        (a2a.ROLE_USER, "Ada"),
        (a2a.ROLE_AGENT, "Booked for Ada"),
    ]
    assert all(m.task_id == "t-2" and m.context_id == "ctx-2" for m in history)
    assert len({m.message_id for m in history}) == 4 and history[2].message_id == "m-2"
    assert [m.parts[0].text for m in task_to_a2a(task, history_length=3).history] == [
        "For whom?",
        "Ada",
        "Booked for Ada",
    ]


def test_events_become_stream_responses() -> None:
    task = task_pb2.Task(task_id="t-1", session_id="c")
    done = task_pb2.TaskEvent(
        status_update=task_pb2.TaskStatusUpdate(state=task_pb2.TASK_STATE_COMPLETED, final_answer="done")
    )
    (status,) = stream_responses(done, task)
    assert status.status_update.status.state == a2a.TASK_STATE_COMPLETED
    assert status.status_update.status.message.parts[0].text == "done"
    chunk = task_pb2.TaskEvent(
        artifact_update=task_pb2.ArtifactUpdate(
            artifact=task_pb2.Artifact(artifact_id="a", parts=[task_pb2.Part(text="x")]), append=True
        )
    )
    (artifact,) = stream_responses(chunk, task)
    assert artifact.artifact_update.append and artifact.artifact_update.artifact.artifact_id == "a"
    assert list(stream_responses(task_pb2.TaskEvent(step_update=task_pb2.StepUpdate()), task)) == []


def test_list_filters_map_state_and_context() -> None:
    assert list_filter(a2a.ListTasksRequest(status=a2a.TASK_STATE_WORKING, context_id="c")) == (
        [task_pb2.TASK_STATE_WORKING],
        "c",
    )
    assert list_filter(a2a.ListTasksRequest()) == ([], "")

"""Pure parts of the task layer: ids, fingerprints, record and entry encodings."""

from __future__ import annotations

import pytest

from agentmesh.kit.errors import DataLoss, InvalidArgument
from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.requests import pending_action_answer, request_fingerprint
from memory import codec
from memory.codec import RecordKind
from memory.tasks import scripts
from memory.tasks.admission import task_id_for
from memory.tasks.entries import decode_entry_payload, encode_entry
from memory.tasks.events import check_event_id, decode_event, encode_event, event_time, status_event
from memory.tasks.records import (
    RESUMPTION_FORMAT,
    Field,
    _decode_resumption,
    decode_snapshot,
    encode_task,
    record_fields,
    step_field,
    timestamp,
)


def test_task_ids_follow_the_request_id_per_owner() -> None:
    one = task_id_for("acme", "u1", "refunds", "req-1", shards=4)
    assert one == task_id_for("acme", "u1", "refunds", "req-1", shards=4)
    assert one != task_id_for("acme", "u2", "refunds", "req-1", shards=4)
    assert one != task_id_for("acme", "u1", "fulfillment", "req-1", shards=4)
    assert task_id_for("a:b", "c", "d", "e", shards=4) != task_id_for("a", "b:c", "d", "e", shards=4)


def test_fingerprint_covers_the_request_but_not_the_view() -> None:
    base = agent_service_pb2.RunRequest(
        instruction="refund order 7", request_id="r", labels={"a": "1", "b": "2"}
    )
    viewed = agent_service_pb2.RunRequest()
    viewed.CopyFrom(base)
    viewed.view = task_pb2.TASK_VIEW_BASIC
    other = agent_service_pb2.RunRequest()
    other.CopyFrom(base)
    other.instruction = "refund order 8"
    assert request_fingerprint("run", base) == request_fingerprint("run", viewed)
    assert request_fingerprint("run", base) != request_fingerprint("run", other)
    submit = agent_service_pb2.SubmitTaskRequest(
        instruction=base.instruction, request_id="r", labels=base.labels
    )
    assert request_fingerprint("submit", submit) != request_fingerprint("run", base)


def test_queue_entries_round_trip_and_reject_foreign_data() -> None:
    payload = {"t": "task-1", "tp": {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}, "at": 5}
    assert decode_entry_payload(encode_entry(payload), "e") == payload
    with pytest.raises(DataLoss, match="not an agentmesh record"):
        decode_entry_payload(b'{"t": "x"}', "e")
    with pytest.raises(DataLoss, match="names no task"):
        decode_entry_payload(codec.encode(RecordKind.QUEUE_ENTRY, 1, b'{"x": 1}'), "e")
    with pytest.raises(DataLoss, match="not JSON"):
        decode_entry_payload(codec.encode(RecordKind.QUEUE_ENTRY, 1, b"\xff"), "e")


def _fields(task: task_pb2.Task, **extra: bytes) -> dict[bytes, bytes]:
    fields = {
        k.encode(): (v if isinstance(v, bytes) else str(v).encode()) for k, v in record_fields(task).items()
    }
    fields[b"v"] = scripts.LAYOUT.encode()
    fields.update({k.encode(): v for k, v in extra.items()})
    return fields


def test_snapshot_overlays_the_hot_fields_on_the_record() -> None:
    task = task_pb2.Task(task_id="t1", state=task_pb2.TASK_STATE_SUBMITTED, instruction="x")
    fields = _fields(
        task, state=b"2", attempt=b"3", msg=b"running", last=b"5-0", rev=b"7", run=b"1", upd=b"1500"
    )
    steps = [task_pb2.Step(index=i, summary=f"step {i}") for i in range(12)]
    for step in reversed(steps):
        fields[step_field(step.index).encode()] = codec.encode_message(RecordKind.STEP, 1, step)
    fields[b"lease"], fields[b"until"] = b"3:abc", b"5000"
    snapshot = decode_snapshot("t1", fields, clock_ms=4000)
    assert snapshot.task.state == task_pb2.TASK_STATE_WORKING
    assert snapshot.task.attempt == 3 and snapshot.task.status_message == "running"
    assert snapshot.task.last_event_id == "5-0"
    assert snapshot.task.update_time == timestamp(1500)
    assert list(snapshot.task.steps) == steps  # in index order (10 sorts after 9)
    assert snapshot.rev == 7 and snapshot.running and snapshot.lease_alive and snapshot.lease_ttl_ms == 1000
    assert not decode_snapshot("t1", fields, clock_ms=5000).lease_alive  # expired
    assert not decode_snapshot("t1", fields).lease_alive  # no clock: not known to be alive
    fields[b"lease"] = b""  # released (cleared fields are empty)
    assert not decode_snapshot("t1", fields, clock_ms=4000).lease_alive


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.pop(b"v"), "layout"),
        (lambda f: f.update({b"v": b"9"}), "layout"),
        (lambda f: f.update({b"v": b"1"}), "layout"),  # the layout with steps and lease in their own keys
        (lambda f: f.update({b"s:0": b"garbage"}), "not an agentmesh record"),
        (lambda f: f.update({b"rec": b"garbage"}), "not an agentmesh record"),
        (lambda f: f.update({b"state": b"two"}), "not a number"),
        (lambda f: f.update({b"rec": encode_task(task_pb2.Task(task_id="other"))}), "belongs to task"),
        (lambda f: f.update({Field.TRACE.encode(): b"{"}), "trace context"),
    ],
)
def test_foreign_or_corrupt_hashes_are_data_loss(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    fields = _fields(task_pb2.Task(task_id="t1"))
    mutate(fields)
    with pytest.raises(DataLoss, match=message):
        decode_snapshot("t1", fields)


def test_events_round_trip_with_id_task_and_time_from_the_stream() -> None:
    task = task_pb2.Task(task_id="t1", state=task_pb2.TASK_STATE_COMPLETED, final_answer="42")
    event = decode_event("t1", b"1700000000123-4", {b"e": encode_event(status_event(task))})
    assert event.event_id == "1700000000123-4" and event.task_id == "t1"
    assert event.status_update.final_answer == "42"
    assert event.create_time == event_time("1700000000123-4")
    assert event.create_time.seconds == 1_700_000_000 and event.create_time.nanos == 123_000_000
    with pytest.raises(DataLoss):
        decode_event("t1", "1-0", {b"e": b"junk"})


@pytest.mark.parametrize("bad", ["abc", "1-", "-1", "1-0-0", "1 0"])
def test_event_ids_are_checked(bad: str) -> None:
    assert check_event_id("") == ""
    assert check_event_id("1700000000000-0") == "1700000000000-0"
    with pytest.raises(InvalidArgument):
        check_event_id(bad)


@pytest.mark.parametrize(
    "request_",
    [
        agent_service_pb2.ResumeTaskRequest(
            task_id="t-1",
            action_id="a-1",
            request_id="r-1",
            decision=agent_service_pb2.ApprovalDecision(approve=True, reason="known customer"),
        ),
        agent_service_pb2.ResumeTaskRequest(
            task_id="t-1",
            action_id="a-2",
            input=agent_service_pb2.UserInput(parts=[task_pb2.Part(text="ORD-1")]),
        ),
    ],
)
def test_an_answer_stored_as_resume_task_request_bytes_still_reads(
    request_: agent_service_pb2.ResumeTaskRequest,
) -> None:
    """Tasks paused before the task layer had its own answer type hold ResumeTaskRequest bytes;
    PendingActionAnswer has the same fields, so they decode, and the agent layer's conversion
    keeps every byte (a replayed resume compares them)."""
    answer = pending_action_answer(request_)
    assert answer.SerializeToString(deterministic=True) == request_.SerializeToString(deterministic=True)
    stored = {
        Field.RESUME.encode(): codec.encode_message(RecordKind.RESUMPTION, RESUMPTION_FORMAT, request_),
        Field.RESUME_ACTION.encode(): codec.encode_message(
            RecordKind.PENDING_ACTION, RESUMPTION_FORMAT, task_pb2.PendingAction(action_id=request_.action_id)
        ),
        Field.RESUME_BY.encode(): b"carol",
    }
    resumption = _decode_resumption("t-1", stored)
    assert resumption is not None and resumption.approver == "carol"
    assert resumption.answer == answer
    assert resumption.answer.WhichOneof("answer") == request_.WhichOneof("answer")

from __future__ import annotations

import pytest

from agentmesh.kit.errors import DataLoss
from agentmesh.v1 import task_pb2
from memory import codec
from memory.codec import RecordKind


def test_round_trip() -> None:
    task = task_pb2.Task(task_id="t1", state=task_pb2.TASK_STATE_WORKING)
    data = codec.encode_message(RecordKind.TASK, 1, task)
    assert codec.decode_message(data, RecordKind.TASK, {1}, task_pb2.Task, "task t1") == task


def test_previous_version_is_accepted_when_listed() -> None:
    data = codec.encode(RecordKind.TASK, 1, b"")
    assert codec.decode(data, RecordKind.TASK, {1, 2}, "t")[0] == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "record missing"),
        (b'{"json": "from someone else"}', "not an agentmesh record"),
        (b"AM", "not an agentmesh record"),
        (codec.encode(RecordKind.STEP, 1, b""), "expected a TASK record"),
        (codec.encode(RecordKind.TASK, 9, b""), "format version 9 is not readable"),
        (codec.encode(RecordKind.TASK, 1, b"\xff\xff\xff"), "corrupt"),
    ],
)
def test_foreign_or_corrupt_data_is_data_loss(data: bytes | None, message: str) -> None:
    with pytest.raises(DataLoss, match=message):
        codec.decode_message(data, RecordKind.TASK, {1}, task_pb2.Task, "task t1")

from __future__ import annotations

import grpc
import pytest

from agentmesh.kit.errors import ResourceExhausted
from agentmesh.kit.streams import STREAM_RETRY_AFTER_S, StreamSlots


def test_a_replica_holds_at_most_max_streams_and_frees_them() -> None:
    slots = StreamSlots(max_streams=2, max_per_caller=0)
    with slots.hold("a"), slots.hold("b"):
        with pytest.raises(ResourceExhausted) as caught, slots.hold("c"):
            pass
        assert slots.open == 2
    assert slots.open == 0
    error = caught.value
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "OVERLOADED"
    assert error.retry_after == STREAM_RETRY_AFTER_S and error.metadata == {"max_streams": "2"}
    with slots.hold("c"):  # freed: room again
        assert slots.open == 1


def test_one_caller_holds_at_most_max_per_caller_and_others_are_unaffected() -> None:
    slots = StreamSlots(max_streams=0, max_per_caller=2)
    with slots.hold("eve"), slots.hold("eve"):
        with pytest.raises(ResourceExhausted) as caught, slots.hold("eve"):
            pass
        with slots.hold("bob"):
            assert slots.open == 3
    assert caught.value.reason == "RATE_LIMITED"
    assert caught.value.metadata == {"max_streams_per_caller": "2"}
    assert caught.value.retry_after == STREAM_RETRY_AFTER_S
    with slots.hold("eve"), slots.hold("eve"):  # released on exit, also after the refusal
        pass


def test_a_stream_that_fails_releases_its_slot() -> None:
    slots = StreamSlots(max_streams=1, max_per_caller=1)
    with pytest.raises(RuntimeError), slots.hold("a"):
        raise RuntimeError("stream broke")
    assert slots.open == 0
    with slots.hold("a"):
        pass

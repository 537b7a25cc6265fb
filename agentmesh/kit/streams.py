"""Bounds on the server streams a replica holds open (WatchTask, WatchTools).

A stream holds resources for as long as it is open (a Redis connection blocked
in XREAD, a subscription), so unbounded streams exhaust them: 500 WatchTask
streams used to take every connection of the Redis pool and fail unary calls
with "Redis unavailable". `StreamSlots.hold(caller)` admits a stream within a
per-replica and a per-caller bound, or answers RESOURCE_EXHAUSTED with
RetryInfo naming the bound (another replica, or this one a moment later, has
room). The replica bound must stay below the Redis pool size
(`AGENTMESH_REDIS_MAX_CONNECTIONS`) so streams never starve unary calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from agentmesh.kit.errors import ResourceExhausted
from agentmesh.v1 import errors_pb2

# A refused stream retries after this long: streams are long-lived, a slot frees rarely.
STREAM_RETRY_AFTER_S = 1.0
# The defaults of AGENTMESH_MAX_STREAMS and AGENTMESH_MAX_STREAMS_PER_CALLER.
DEFAULT_MAX_STREAMS = 256
DEFAULT_MAX_STREAMS_PER_CALLER = 32


class StreamSlots:
    """Open streams of one replica, in all and per caller (`caller` is any stable key)."""

    __slots__ = ("_by_caller", "_open", "max_per_caller", "max_streams")

    def __init__(
        self, max_streams: int = DEFAULT_MAX_STREAMS, max_per_caller: int = DEFAULT_MAX_STREAMS_PER_CALLER
    ) -> None:
        self.max_streams = max_streams
        self.max_per_caller = max_per_caller
        self._open = 0
        self._by_caller: dict[str, int] = {}

    @property
    def open(self) -> int:
        return self._open

    @contextlib.contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        held = self._by_caller.get(caller, 0)
        if self.max_streams and self._open >= self.max_streams:
            raise ResourceExhausted(
                f"this replica holds {self._open} streams, its limit (AGENTMESH_MAX_STREAMS); retry shortly",
                reason=errors_pb2.ERROR_REASON_OVERLOADED,
                metadata={"max_streams": str(self.max_streams)},
                retry_after=STREAM_RETRY_AFTER_S,
            )
        if self.max_per_caller and held >= self.max_per_caller:
            raise ResourceExhausted(
                f"you hold {held} streams on this replica, the limit per caller "
                "(AGENTMESH_MAX_STREAMS_PER_CALLER); close one or retry later",
                reason=errors_pb2.ERROR_REASON_RATE_LIMITED,
                metadata={"max_streams_per_caller": str(self.max_per_caller)},
                retry_after=STREAM_RETRY_AFTER_S,
            )
        self._open += 1
        self._by_caller[caller] = held + 1
        try:
            yield
        finally:
            self._open -= 1
            left = self._by_caller[caller] - 1
            if left:
                self._by_caller[caller] = left
            else:
                del self._by_caller[caller]

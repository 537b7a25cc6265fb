"""Per-endpoint circuit breakers: stop calling an endpoint that keeps failing, fail fast instead.

    CLOSED --(threshold consecutive failures)--> OPEN --(reset_after elapsed)--> HALF_OPEN
    HALF_OPEN --(probe succeeds)--> CLOSED;  HALF_OPEN --(probe fails)--> OPEN

Only failures that say the endpoint is unhealthy count (UNAVAILABLE, DEADLINE_EXCEEDED,
connection failures); an answer of any other status proves it is alive.
Breakers are per process (each agent replica judges for itself, like Envoy's
outlier detection); the clock is injectable for tests.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from agentmesh.kit import metrics

UNHEALTHY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    reset_after_s: float = 10.0
    half_open_probes: int = 1
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[BreakerState], None] | None = None
    _state: BreakerState = field(default=BreakerState.CLOSED, init=False)
    _failures: int = field(default=0, init=False)
    _opened_at: float = field(default=0.0, init=False)
    _probes: int = field(default=0, init=False)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.reset_after_s:
            self._enter(BreakerState.HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.reset_after_s - (self.clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go out now? In HALF_OPEN, only `half_open_probes` at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes < self.half_open_probes:
            self._probes += 1
            return True
        return False

    def record(self, code: grpc.StatusCode | None) -> None:
        """Feed back how a call that `allow`ed ended (None: it never reached a verdict, e.g. cancelled)."""
        if code is None:
            self._probes = max(0, self._probes - 1)
            return
        if code in UNHEALTHY:
            self._failure()
        else:
            self._success()

    def _success(self) -> None:
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._enter(BreakerState.CLOSED)

    def _failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._opened_at = self.clock()
        self._enter(BreakerState.OPEN)

    def _enter(self, state: BreakerState) -> None:
        if state is self._state:
            return
        self._state = state
        self._probes = 0
        if state is BreakerState.CLOSED:
            self._failures = 0
        if self.on_change is not None:
            self.on_change(state)


class BreakerBoard:
    """One breaker per endpoint; metrics per tool that uses the endpoint."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = (failure_threshold, reset_after_s, clock)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._tools: dict[str, set[str]] = {}

    def for_endpoint(self, endpoint: str, tool: str) -> CircuitBreaker:
        tools = self._tools.setdefault(endpoint, set())
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            threshold, reset, clock = self._settings
            breaker = CircuitBreaker(threshold, reset, clock=clock)
            breaker.on_change = lambda state: self._report(endpoint, state)
            self._breakers[endpoint] = breaker
        if tool not in tools:
            tools.add(tool)
            metrics.TOOL_BREAKER_STATE.labels(tool).set(int(breaker.state))
        return breaker

    def _report(self, endpoint: str, state: BreakerState) -> None:
        for tool in self._tools.get(endpoint, ()):
            metrics.TOOL_BREAKER_STATE.labels(tool).set(int(state))
            metrics.TOOL_BREAKER_TRANSITIONS.labels(tool, state.name).inc()

"""Backoff and retry: the one mechanism, for every layer (the kit is the lowest that needs it).

- `Backoff`: capped exponential delays with full jitter (a random point under the ceiling, so
  concurrent retriers spread out), never shorter than the server's RetryInfo. Bounded retries
  run it inside tenacity (`Backoff.wait`, e.g. the tool invoker, a task's checkpoint writes);
  the per-tool RetryPolicy (tool_registry/retry.py) is a Backoff with the tool's numbers.
- `Reconnect`: the state of a background loop that must keep going (a watch, a change feed, a
  queue reader, self-registration): `await reconnect.wait(stop)` after a failure sleeps the next
  delay (returning early when `stop` is set), `reset()` after a success.
- `retry_after(error)`: the delay a server asked for (RetryInfo), if any.

    reconnect = Reconnect(Backoff(initial_s=0.2, max_s=5.0))
    while True:
        try:
            await follow()
            reconnect.reset()
        except grpc.aio.AioRpcError:
            await reconnect.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState

from agentmesh.kit.errors import AgentmeshError

DEFAULT_INITIAL_S = 0.1
DEFAULT_MAX_S = 5.0
DEFAULT_MULTIPLIER = 2.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter."""

    initial_s: float = DEFAULT_INITIAL_S
    max_s: float = DEFAULT_MAX_S
    multiplier: float = DEFAULT_MULTIPLIER

    def ceiling(self, attempt: int) -> float:
        """The longest sleep after failed attempt number `attempt` (1-based)."""
        return min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rng: Callable[[], float] = random.random
    ) -> float:
        """Sleep before attempt `attempt + 1`: full jitter under the ceiling, at least RetryInfo."""
        return max(self.ceiling(attempt) * rng(), retry_after or 0.0)

    def wait(self, state: RetryCallState) -> float:
        """tenacity's `wait=`: the delay after the attempt that just failed, honouring its RetryInfo."""
        outcome = state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        return self.delay(state.attempt_number, retry_after=retry_after(error))


def retry_after(error: BaseException | None) -> float | None:
    """The delay the server asked for (RetryInfo on an AgentmeshError), else None."""
    return error.retry_after if isinstance(error, AgentmeshError) else None


class Reconnect:
    """Failures in a row of a background loop, and the sleep before its next try."""

    def __init__(self, backoff: Backoff | None = None, *, rng: Callable[[], float] = random.random) -> None:
        self.backoff = backoff or Backoff()
        self.failures = 0
        self._rng = rng

    def reset(self) -> None:
        """The loop succeeded: the next failure starts from the shortest delay again."""
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """Count a failure; the delay to sleep before the next try."""
        self.failures += 1
        return self.backoff.delay(self.failures, retry_after=retry_after, rng=self._rng)

    async def wait(self, stop: asyncio.Event | None = None, *, retry_after: float | None = None) -> float:
        """Count a failure and sleep the next delay (less if `stop` is set meanwhile); the delay."""
        delay = self.next_delay(retry_after)
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        return delay

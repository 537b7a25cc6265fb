from __future__ import annotations

import itertools

import grpc
import pytest

from agentmesh.v1 import tool_options_pb2, tool_pb2
from tool_registry.breaker import BreakerState, CircuitBreaker
from tool_registry.retry import RetryDecision, ToolBackoff, retry_decision

C = grpc.StatusCode
SE = tool_options_pb2
FRIENDLY = (SE.SIDE_EFFECT_READ_ONLY, SE.SIDE_EFFECT_IDEMPOTENT, SE.SIDE_EFFECT_KEYED)
UNSAFE = (SE.SIDE_EFFECT_NON_IDEMPOTENT, SE.SIDE_EFFECT_UNSPECIFIED)
CODES = [code for code in C if code != C.OK]


def expected(
    side_effect: int, code: grpc.StatusCode, attempt: int, sent: bool, retry_info: bool
) -> RetryDecision:
    """DESIGN.md "Side effects and retries", written out case by case."""
    last = attempt >= 3
    if (
        side_effect in UNSAFE
        and sent
        and code in {C.UNAVAILABLE, C.DEADLINE_EXCEEDED, C.CANCELLED, C.UNKNOWN, C.INTERNAL, C.DATA_LOSS}
    ):
        return RetryDecision.OUTCOME_UNKNOWN
    if not sent:
        retry = True
    elif code == C.ABORTED:
        retry = retry_info
    elif side_effect in FRIENDLY:
        retry = code in (C.UNAVAILABLE, C.DEADLINE_EXCEEDED) or (code == C.RESOURCE_EXHAUSTED and retry_info)
    else:
        retry = False
    return RetryDecision.RETRY if retry and not last else RetryDecision.FAIL


@pytest.mark.parametrize("side_effect", [*FRIENDLY, *UNSAFE])
def test_retry_decision_for_every_class_code_attempt_and_sent(side_effect: int) -> None:
    for code, attempt, sent, retry_info in itertools.product(CODES, (1, 2, 3), (True, False), (True, False)):
        got = retry_decision(side_effect, code, attempt, sent, max_attempts=3, retry_info=retry_info)
        assert got is expected(side_effect, code, attempt, sent, retry_info), (
            code,
            attempt,
            sent,
            retry_info,
        )


def test_key_cases_in_words() -> None:
    keyed, once = SE.SIDE_EFFECT_KEYED, SE.SIDE_EFFECT_NON_IDEMPOTENT
    assert retry_decision(keyed, C.DEADLINE_EXCEEDED, 1, True) is RetryDecision.RETRY
    assert retry_decision(once, C.DEADLINE_EXCEEDED, 1, True) is RetryDecision.OUTCOME_UNKNOWN
    assert retry_decision(once, C.UNAVAILABLE, 1, False) is RetryDecision.RETRY
    assert retry_decision(once, C.ABORTED, 1, True, retry_info=True) is RetryDecision.RETRY
    assert (
        retry_decision(keyed, C.RESOURCE_EXHAUSTED, 1, True) is RetryDecision.FAIL
    )  # no RetryInfo: size limit
    assert retry_decision(keyed, C.INVALID_ARGUMENT, 1, True) is RetryDecision.FAIL
    with pytest.raises(ValueError, match="not a failure"):
        retry_decision(keyed, C.OK, 1, True)


def test_backoff_policy_defaults_and_full_jitter() -> None:
    spec = tool_pb2.ToolSpec()
    backoff = ToolBackoff.of(spec)
    assert (backoff.max_attempts, backoff.initial_s, backoff.max_s, backoff.multiplier) == (3, 0.1, 5.0, 2.0)
    spec.retry.max_attempts = 50
    spec.retry.initial_backoff.FromMilliseconds(200)
    spec.retry.max_backoff.FromMilliseconds(500)
    backoff = ToolBackoff.of(spec)
    assert backoff.max_attempts == 10
    assert [backoff.delay(n, rng=lambda: 1.0) for n in (1, 2, 3)] == [0.2, 0.4, 0.5]
    assert backoff.delay(1, rng=lambda: 0.0) == 0.0
    assert backoff.delay(1, retry_after=0.75, rng=lambda: 0.5) == 0.75


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_after_the_reset() -> None:
    clock = Clock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=5, clock=clock, on_change=changes.append)
    for _ in range(2):
        assert breaker.allow()
        breaker.record(C.UNAVAILABLE)
    breaker.record(C.OK)  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record(C.DEADLINE_EXCEEDED)
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_after() == 5
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.record(C.UNAVAILABLE)
    assert breaker.state is BreakerState.OPEN
    clock.now += 5
    assert breaker.allow()
    breaker.record(C.NOT_FOUND)  # any answer proves the endpoint alive
    assert breaker.state is BreakerState.CLOSED
    assert changes == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_breaker_half_open_probe_that_never_finished_frees_its_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=1, clock=clock)
    breaker.record(C.UNAVAILABLE)
    clock.now += 1
    assert breaker.allow()
    breaker.record(None)
    assert breaker.allow()

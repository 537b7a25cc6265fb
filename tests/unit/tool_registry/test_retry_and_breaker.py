from __future__ import annotations

import itertools

import grpc
import pytest

from agentmesh.kit.metrics import REGISTRY
from agentmesh.v1 import tool_options_pb2, tool_pb2
from tool_registry.breaker import BreakerBoard, BreakerState, CircuitBreaker
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


# -- killers of surviving mutants (tests/MUTATION.md) ------------------------------------------


def test_ok_is_refused_as_a_failure_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"^OK is not a failure$"):
        retry_decision(tool_options_pb2.SIDE_EFFECT_READ_ONLY, grpc.StatusCode.OK, 1, True)


@pytest.mark.parametrize(
    ("max_attempts", "multiplier", "expected"),
    [(1, 1.5, (1, 1.5)), (0, 0.0, (3, 2.0)), (3, 0.5, (3, 1.0)), (50, 3.0, (10, 3.0))],
)
def test_backoff_takes_the_policy_within_its_bounds(
    max_attempts: int, multiplier: float, expected: tuple[int, float]
) -> None:
    spec = tool_pb2.ToolSpec()
    spec.retry.max_attempts = max_attempts
    spec.retry.backoff_multiplier = multiplier
    backoff = ToolBackoff.of(spec)
    assert (backoff.max_attempts, backoff.multiplier) == expected


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_counts_down_to_the_probe() -> None:
    clock = _Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=10.0, clock=clock)
    assert breaker.retry_after() == 0.0  # closed
    breaker.record(grpc.StatusCode.UNAVAILABLE)
    clock.now = 3.0
    assert breaker.retry_after() == 7.0
    clock.now = 9.5
    assert breaker.retry_after() == 0.5


def test_half_open_admits_exactly_its_probes_and_a_cancelled_probe_frees_one_slot() -> None:
    clock = _Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=1.0, half_open_probes=2, clock=clock)
    breaker.record(grpc.StatusCode.UNAVAILABLE)
    clock.now = 1.0
    assert [breaker.allow() for _ in range(3)] == [True, True, False]
    breaker.record(None)  # one probe cancelled: one slot back, not two
    assert [breaker.allow() for _ in range(2)] == [True, False]


def test_a_closed_breaker_counts_failures_from_zero_again() -> None:
    clock = _Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=1.0, clock=clock)
    for _ in range(3):
        breaker.record(grpc.StatusCode.UNAVAILABLE)
    clock.now = 1.0
    assert breaker.allow()
    breaker.record(grpc.StatusCode.OK)  # the probe succeeds: closed
    assert breaker.state is BreakerState.CLOSED
    for _ in range(2):
        breaker.record(grpc.StatusCode.UNAVAILABLE)
        assert breaker.state is BreakerState.CLOSED
    breaker.record(grpc.StatusCode.UNAVAILABLE)
    assert breaker.state is BreakerState.OPEN


def _gauge(tool: str) -> float | None:
    return REGISTRY.get_sample_value("agentmesh_tool_breaker_state", {"tool": tool})


def test_one_breaker_per_endpoint_shared_by_its_tools_with_the_board_settings() -> None:
    """The board keeps one breaker per endpoint: failures through one tool open it for every tool
    served there (and for the next call of the same tool), never for another endpoint; it is built
    with the board's threshold, reset time and clock; each tool's gauge shows its endpoint's state."""
    clock = Clock()
    board = BreakerBoard(failure_threshold=2, reset_after_s=7, clock=clock)
    first = board.for_endpoint("10.0.0.1:50071", "board_refund")
    assert board.for_endpoint("10.0.0.1:50071", "board_refund") is first
    assert board.for_endpoint("10.0.0.1:50071", "board_lookup") is first
    other = board.for_endpoint("10.0.0.2:50071", "board_ship")
    assert other is not first
    assert _gauge("board_refund") == _gauge("board_lookup") == _gauge("board_ship") == 0
    for _ in range(2):
        assert first.allow()
        first.record(C.UNAVAILABLE)
    assert board.for_endpoint("10.0.0.1:50071", "board_lookup").state is BreakerState.OPEN
    assert first.retry_after() == 7  # the board's reset time, on the board's clock
    assert other.state is BreakerState.CLOSED and other.allow()
    assert _gauge("board_refund") == _gauge("board_lookup") == 2 and _gauge("board_ship") == 0
    clock.now += 7
    assert first.state is BreakerState.HALF_OPEN
    late = board.for_endpoint("10.0.0.1:50071", "board_late")  # a tool seen first while open
    assert late is first and _gauge("board_late") == int(BreakerState.HALF_OPEN)


def test_a_board_by_default_opens_an_endpoint_after_five_failures_for_ten_seconds() -> None:
    """The invoker's board (`BreakerBoard()` in tool_registry/invoke.py) uses the defaults:
    five consecutive unhealthy answers open the endpoint, a probe goes out ten seconds later."""
    clock = Clock()
    breaker = BreakerBoard(clock=clock).for_endpoint("10.0.0.9:50071", "board_default")
    for _ in range(4):
        assert breaker.allow()
        breaker.record(C.UNAVAILABLE)
    assert breaker.state is BreakerState.CLOSED
    breaker.record(C.DEADLINE_EXCEEDED)
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_after() == 10.0
    clock.now += 9.5
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.5
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow()

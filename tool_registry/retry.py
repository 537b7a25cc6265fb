"""Which failed tool calls are retried, and after how long (pure; DESIGN.md "Side effects and retries").

- READ_ONLY, IDEMPOTENT: retried on UNAVAILABLE, RESOURCE_EXHAUSTED carrying
  RetryInfo (after that delay) and DEADLINE_EXCEEDED.
- KEYED: the same, always with the same `idempotency-key`, so the tool's
  dedupe makes it happen at most once.
- NON_IDEMPOTENT (and UNSPECIFIED): retried only when the request was never
  sent. A failure after sending that may have taken effect (UNAVAILABLE,
  DEADLINE_EXCEEDED, CANCELLED, UNKNOWN, INTERNAL, DATA_LOSS) is
  OUTCOME_UNKNOWN: the runner parks the task instead of guessing.
- ABORTED with RetryInfo (a duplicate still in flight) is retried for every
  class: nothing ran.

"Not sent" is what the invoker can observe exactly: it waits for the channel
to be READY before starting a call, and an attempt that never got a READY
channel (connection refused, still connecting at its deadline, in
TRANSIENT_FAILURE) never started a call. Every failure of a call that was
started counts as sent, even if the bytes never left the process: the safe
side for a non-idempotent tool.

RESOURCE_EXHAUSTED without RetryInfo (a message over the size limit, a quota
with no hint) is final: retrying cannot help.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc

from agentmesh.kit.retry import DEFAULT_INITIAL_S, DEFAULT_MAX_S, DEFAULT_MULTIPLIER, Backoff
from agentmesh.v1 import tool_options_pb2, tool_pb2

Code = grpc.StatusCode

DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_CAP = 10

# Codes after which nothing is known to have run (safe to retry for retry-friendly classes).
TRANSIENT = frozenset({Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED, Code.DEADLINE_EXCEEDED})
# Codes after which a started call may or may not have taken effect.
AMBIGUOUS = frozenset(
    {Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED, Code.UNKNOWN, Code.INTERNAL, Code.DATA_LOSS}
)
RETRY_FRIENDLY = frozenset(
    {
        tool_options_pb2.SIDE_EFFECT_READ_ONLY,
        tool_options_pb2.SIDE_EFFECT_IDEMPOTENT,
        tool_options_pb2.SIDE_EFFECT_KEYED,
    }
)


class RetryDecision(enum.Enum):
    RETRY = "retry"
    FAIL = "fail"  # final: the error stands (nothing ran, or the tool answered)
    OUTCOME_UNKNOWN = "outcome_unknown"  # a non-idempotent call may have taken effect


def retry_decision(
    side_effect: int,
    code: grpc.StatusCode,
    attempt: int,
    sent: bool,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_info: bool = False,
) -> RetryDecision:
    """What to do after attempt number `attempt` (1-based) failed with `code`."""
    if code == Code.OK:
        raise ValueError("OK is not a failure")
    retry_friendly = side_effect in RETRY_FRIENDLY
    if not retry_friendly and sent and code in AMBIGUOUS:
        return RetryDecision.OUTCOME_UNKNOWN
    if not sent:
        wanted = True  # nothing ran: safe for every class
    elif code == Code.ABORTED or (retry_friendly and code == Code.RESOURCE_EXHAUSTED):
        wanted = retry_info
    else:
        wanted = retry_friendly and code in TRANSIENT
    if wanted and attempt < max_attempts:
        return RetryDecision.RETRY
    return RetryDecision.FAIL


@dataclass(frozen=True, slots=True)
class ToolBackoff(Backoff):
    """A tool's RetryPolicy with its defaults applied: the kit's Backoff and a bound on attempts."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    @classmethod
    def of(cls, spec: tool_pb2.ToolSpec) -> ToolBackoff:
        policy = spec.retry
        attempts = policy.max_attempts or DEFAULT_MAX_ATTEMPTS
        initial = policy.initial_backoff.seconds + policy.initial_backoff.nanos / 1e9
        most = policy.max_backoff.seconds + policy.max_backoff.nanos / 1e9
        return cls(
            max_attempts=max(1, min(attempts, MAX_ATTEMPTS_CAP)),
            initial_s=initial if initial > 0 else DEFAULT_INITIAL_S,
            max_s=most if most > 0 else DEFAULT_MAX_S,
            multiplier=max(1.0, policy.backoff_multiplier or DEFAULT_MULTIPLIER),
        )

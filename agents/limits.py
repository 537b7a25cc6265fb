"""Task budgets: request limits merged with the domain's caps, and usage tallies (pure).

A request may only lower the caps: a value above a cap is INVALID_ARGUMENT
with reason LIMIT_ABOVE_CAP naming the cap (metadata `cap`, `max`); 0 means
"the domain's default". `Budget.exhausted` says which budget, if any, stops
the task now — the runner asks it before every model call and tool call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TypeAlias

from google.protobuf import duration_pb2

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.v1 import errors_pb2, task_pb2
from agents.spec import DomainSpec, LimitSet

StopReason: TypeAlias = task_pb2.StopReason.ValueType


@dataclass(frozen=True, slots=True)
class Budget:
    """The limits in force for one task."""

    max_iterations: int
    token_cap: int
    max_tool_calls: int
    deadline_s: float
    max_cost_usd: float  # 0 = no cost cap

    @classmethod
    def from_limit_set(cls, limits: LimitSet) -> Budget:
        return cls(
            max_iterations=limits.max_iterations,
            token_cap=limits.token_cap,
            max_tool_calls=limits.max_tool_calls,
            deadline_s=limits.deadline.total_seconds(),
            max_cost_usd=limits.max_cost_usd,
        )

    def to_proto(self) -> task_pb2.Limits:
        return task_pb2.Limits(
            max_iterations=self.max_iterations,
            token_cap=self.token_cap,
            max_tool_calls=self.max_tool_calls,
            deadline=duration(self.deadline_s),
            max_cost_usd=self.max_cost_usd,
        )

    @classmethod
    def from_proto(cls, limits: task_pb2.Limits) -> Budget:
        return cls(
            max_iterations=limits.max_iterations,
            token_cap=limits.token_cap,
            max_tool_calls=limits.max_tool_calls,
            deadline_s=seconds(limits.deadline),
            max_cost_usd=limits.max_cost_usd,
        )


@dataclass(slots=True)
class Tally:
    """What a task consumed so far."""

    iterations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: int = 0
    cost_usd: float = 0.0
    wall_time_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_proto(self) -> task_pb2.Usage:
        return task_pb2.Usage(
            iterations=self.iterations,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.total_tokens,
            tool_calls=self.tool_calls,
            cost_usd=round(self.cost_usd, 9),
            wall_time=duration(self.wall_time_s),
        )

    @classmethod
    def from_proto(cls, usage: task_pb2.Usage) -> Tally:
        return cls(
            iterations=usage.iterations,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            tool_calls=usage.tool_calls,
            cost_usd=usage.cost_usd,
            wall_time_s=seconds(usage.wall_time),
        )

    def copy(self) -> Tally:
        return replace(self)


@dataclass(frozen=True, slots=True)
class LimitReached:
    """A budget that stops the task: the stop reason and what a human reads."""

    stop_reason: StopReason
    limit: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)


def before_model_call(budget: Budget, tally: Tally) -> LimitReached | None:
    if tally.iterations >= budget.max_iterations:
        return LimitReached(
            task_pb2.STOP_REASON_MAX_ITERATIONS,
            "max_iterations",
            f"stopped after {tally.iterations} model turns (max_iterations={budget.max_iterations})",
        )
    return over_spend(budget, tally)


def before_tool_call(budget: Budget, tally: Tally) -> LimitReached | None:
    if tally.tool_calls >= budget.max_tool_calls:
        return LimitReached(
            task_pb2.STOP_REASON_MAX_TOOL_CALLS,
            "max_tool_calls",
            f"stopped after {tally.tool_calls} tool calls (max_tool_calls={budget.max_tool_calls})",
        )
    return over_spend(budget, tally)


def over_spend(budget: Budget, tally: Tally) -> LimitReached | None:
    """Token and cost caps: a turn that overshot them is not acted upon."""
    if tally.total_tokens >= budget.token_cap:
        return LimitReached(
            task_pb2.STOP_REASON_TOKEN_CAP,
            "token_cap",
            f"stopped after {tally.total_tokens} tokens (token_cap={budget.token_cap})",
        )
    if budget.max_cost_usd > 0 and tally.cost_usd >= budget.max_cost_usd:
        return LimitReached(
            task_pb2.STOP_REASON_COST_CAP,
            "max_cost_usd",
            f"stopped after ${tally.cost_usd:.6f} of model cost (max_cost_usd={budget.max_cost_usd:g})",
        )
    return None


def deadline_exhausted(budget: Budget) -> LimitReached:
    return LimitReached(
        task_pb2.STOP_REASON_DEADLINE, "deadline", f"the task's deadline of {budget.deadline_s:g}s passed"
    )


def deadline_passed(budget: Budget, started_at: float, now: float) -> LimitReached | None:
    return deadline_exhausted(budget) if now >= started_at + budget.deadline_s else None


def effective_budget(spec: DomainSpec, requested: task_pb2.Limits, prefix: str = "limits") -> Budget:
    """The request's limits merged with the spec's defaults, refused above the caps."""
    caps = Budget.from_limit_set(spec.caps)
    base = Budget.from_limit_set(spec.default_limits)
    asked = {
        "max_iterations": float(requested.max_iterations),
        "token_cap": float(requested.token_cap),
        "max_tool_calls": float(requested.max_tool_calls),
        "deadline": seconds(requested.deadline),
        "max_cost_usd": requested.max_cost_usd,
    }
    cap_values = {
        "max_iterations": float(caps.max_iterations),
        "token_cap": float(caps.token_cap),
        "max_tool_calls": float(caps.max_tool_calls),
        "deadline": caps.deadline_s,
        "max_cost_usd": caps.max_cost_usd if caps.max_cost_usd > 0 else math.inf,
    }
    invalid: list[FieldViolation] = []
    above: list[FieldViolation] = []
    for name, value in asked.items():
        if value < 0 or math.isnan(value):
            invalid.append(
                FieldViolation(f"{prefix}.{name}", f"is {value:g}; must not be negative", "OUT_OF_RANGE")
            )
        elif value > cap_values[name]:
            above.append(
                FieldViolation(
                    f"{prefix}.{name}",
                    f"is {value:g}; the {spec.slug} domain's cap is {cap_values[name]:g}",
                    "LIMIT_ABOVE_CAP",
                )
            )
    if invalid:
        raise InvalidArgument(f"invalid limits: {', '.join(v.field for v in invalid)}", violations=invalid)
    if above:
        first = above[0].field.rsplit(".", 1)[1]
        raise InvalidArgument(
            f"{', '.join(v.field for v in above)} above the {spec.slug} domain's caps "
            f"(GetAgentCard publishes them)",
            reason=errors_pb2.ERROR_REASON_LIMIT_ABOVE_CAP,
            metadata={"cap": first, "max": f"{cap_values[first]:g}"},
            violations=above,
        )
    return Budget(
        max_iterations=int(asked["max_iterations"]) or base.max_iterations,
        token_cap=int(asked["token_cap"]) or base.token_cap,
        max_tool_calls=int(asked["max_tool_calls"]) or base.max_tool_calls,
        deadline_s=asked["deadline"] or base.deadline_s,
        max_cost_usd=asked["max_cost_usd"] or base.max_cost_usd,
    )


def seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


def duration(value: float | timedelta) -> duration_pb2.Duration:
    total = value.total_seconds() if isinstance(value, timedelta) else value
    whole = math.floor(total)
    return duration_pb2.Duration(seconds=whole, nanos=round((total - whole) * 1e9))

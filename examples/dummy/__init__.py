"""The training dummy: a tool whose latency and failures are chosen (the example stories' chaos target).

Behaviour (flags, DUMMY_* environment variables, or the Configure method at run time):

- latency on every call;
- UNAVAILABLE, or RESOURCE_EXHAUSTED with RetryInfo, before doing anything
  (as rates, or deterministically for the next N calls);
- hanging past the caller's deadline before doing anything (a timeout with no effect);
- doing the work, then hanging past the deadline ("succeed, then time out": the
  effect happened but the caller saw DEADLINE_EXCEEDED).

Act is KEYED (the SDK deduplicates on the idempotency key: a retry after
"succeed, then time out" replays the stored answer), ActOnce is NON_IDEMPOTENT
(the runtime must not retry it blindly), Echo and Stats are read-only. Stats
counts calls, side effects and injected failures, so a test or a demo can check
that no side effect ran twice.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from typing import Any

from google.protobuf import json_format

from agentmesh.kit.config import Role, Settings
from agentmesh.kit.errors import ResourceExhausted, Unavailable
from agentmesh.v1 import errors_pb2
from examples._common import load, settings_for
from tool_registry.sdk import ToolContext, ToolService

HANG_EXTRA_S = 0.2


class Dummy:
    """The misbehaviour engine, separate from the gRPC layer."""

    def __init__(self, behaviour: dict[str, Any] | None = None) -> None:
        self.behaviour: dict[str, Any] = {}
        self.calls = 0
        self.effects = 0
        self.effects_by_action: dict[str, int] = {}
        self.injected = 0
        self.rng = random.Random()
        # What the last call carried (for tests and demos: deadline propagation, metadata).
        self.last_remaining: float | None = None
        self.last_metadata: dict[str, str] = {}
        self.configure(behaviour or {})

    def configure(self, behaviour: dict[str, Any]) -> None:
        if behaviour.pop("reset_stats", False):
            self.calls = self.effects = self.injected = 0
            self.effects_by_action = {}
        self.behaviour = behaviour
        seed = int(behaviour.get("seed", 0) or 0)
        self.rng = random.Random(seed) if seed else random.Random()

    def _seconds(self, name: str) -> float:
        value = self.behaviour.get(name)
        if not value:
            return 0.0
        return float(str(value).rstrip("s"))

    def _take(self, counter: str) -> bool:
        left = int(self.behaviour.get(counter, 0) or 0)
        if left > 0:
            self.behaviour[counter] = left - 1
            return True
        return False

    def _roll(self, rate: str) -> bool:
        chance = float(self.behaviour.get(rate, 0.0) or 0.0)
        return chance > 0 and self.rng.random() < chance

    async def _hang(self, context: ToolContext) -> None:
        remaining = context.time_remaining()
        await asyncio.sleep((remaining if remaining is not None else 30.0) + HANG_EXTRA_S)

    async def call(self, context: ToolContext, effect: bool, action: str = "") -> int:
        self.calls += 1
        self.last_remaining = context.time_remaining()
        self.last_metadata = dict(context.metadata)
        latency = self._seconds("latency")
        if latency:
            await asyncio.sleep(latency)
        if self._take("fail_next") or self._roll("unavailable_rate"):
            self.injected += 1
            raise Unavailable(
                "the dummy is down (injected)", reason=errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE
            )
        if self._take("exhaust_next") or self._roll("exhausted_rate"):
            self.injected += 1
            raise ResourceExhausted(
                "the dummy is rate limiting (injected)",
                retry_after=self._seconds("retry_after") or 0.05,
            )
        if self._take("hang_next") or self._roll("hang_rate"):
            self.injected += 1
            await self._hang(context)
            return 0
        number = 0
        if effect:
            self.effects += 1
            self.effects_by_action[action] = self.effects_by_action.get(action, 0) + 1
            number = self.effects
        if self._take("succeed_then_hang_next") or self._roll("succeed_then_hang_rate"):
            self.injected += 1
            await self._hang(context)
        return number

    def stats(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "effects": self.effects,
            "injected_failures": self.injected,
            "behaviour": dict(self.behaviour),
            "effects_by_action": dict(self.effects_by_action),
        }


def build(behaviour: dict[str, Any] | None = None) -> ToolService:
    dummy = Dummy(behaviour)
    app = load("dummy")
    app.state = dummy  # type: ignore[attr-defined]

    @app.method("Echo")
    async def echo(request: Any, context: ToolContext) -> dict[str, Any]:
        await dummy.call(context, effect=False)
        return {"message": request.message}

    @app.method("Act")
    async def act(request: Any, context: ToolContext) -> dict[str, Any]:
        return {"effect": await dummy.call(context, effect=True, action=request.action)}

    @app.method("ActOnce")
    async def act_once(request: Any, context: ToolContext) -> dict[str, Any]:
        return {"effect": await dummy.call(context, effect=True, action=request.action)}

    @app.method("Stats")
    async def stats(request: Any, context: ToolContext) -> dict[str, Any]:
        return dummy.stats()

    @app.method("Configure")
    async def configure(request: Any, context: ToolContext) -> dict[str, Any]:
        dummy.configure(json_format.MessageToDict(request, preserving_proto_field_name=True))
        return dummy.behaviour

    return app


def behaviour_from(args: argparse.Namespace) -> dict[str, Any]:
    behaviour: dict[str, Any] = {}
    if args.latency_ms:
        behaviour["latency"] = f"{args.latency_ms / 1000:.3f}s"
    if args.retry_after_ms:
        behaviour["retry_after"] = f"{args.retry_after_ms / 1000:.3f}s"
    for name in ("unavailable_rate", "exhausted_rate", "hang_rate", "succeed_then_hang_rate", "seed"):
        value = getattr(args, name)
        if value:
            behaviour[name] = value
    return behaviour


def main(argv: list[str] | None = None) -> None:
    env = Settings.from_env(role=Role.TOOL)  # the DUMMY_* variables are Settings fields
    parser = argparse.ArgumentParser(prog="examples.dummy", description="The training dummy tool.")
    parser.add_argument("--latency-ms", type=float, default=env.dummy_latency_ms)
    parser.add_argument("--unavailable-rate", type=float, default=env.dummy_unavailable_rate)
    parser.add_argument("--exhausted-rate", type=float, default=env.dummy_exhausted_rate)
    parser.add_argument("--hang-rate", type=float, default=env.dummy_hang_rate)
    parser.add_argument("--succeed-then-hang-rate", type=float, default=env.dummy_succeed_then_hang_rate)
    parser.add_argument("--retry-after-ms", type=float, default=env.dummy_retry_after_ms)
    parser.add_argument("--seed", type=int, default=env.dummy_seed)
    args = parser.parse_args([] if argv is None else argv)  # `agentmesh serve tool` passes none
    build(behaviour_from(args)).run(settings_for("dummy"))

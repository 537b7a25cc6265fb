"""ToolInvoker against example tools served by the SDK: real gRPC servers, real valkey."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import grpc
import pytest

from agentmesh.kit import metadata as md
from agentmesh.kit.errors import from_rpc_error
from agentmesh.kit.net import free_port
from agentmesh.v1 import tool_options_pb2
from examples import dummy, inventory, payments
from tests.integration.tool_registry.tools_support import served
from tool_registry.breaker import BreakerBoard, BreakerState
from tool_registry.invoke import CallContext, CallOutcome, ResolvedTool, ToolInvoker

pytestmark = pytest.mark.integration


def step(n: int, **kwargs: Any) -> CallContext:
    return CallContext(task_id="task-1", step=n, deadline=time.time() + 20, **kwargs)


class Sleeps:
    """Records backoff sleeps and sleeps for real (a short while)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(min(delay, 1.5))


async def test_ok_invalid_arguments_and_denied(redis_url: str) -> None:
    async with served(inventory.build(), redis_url) as tools:
        invoker = ToolInvoker()
        check = tools.tool("CheckStock")
        result = await invoker.invoke(check, '{"sku": "ABC-001"}', step(1))
        assert result.outcome is CallOutcome.OK and result.response == {"sku": "ABC-001", "available": 10}
        assert json.loads(result.observation) == result.response and result.attempts == 1

        bad = await invoker.invoke(check, '{"sku": "abc"}', step(2))
        assert bad.outcome is CallOutcome.INVALID_ARGUMENTS and bad.attempts == 0
        assert json.loads(bad.observation)["violations"][0]["field"] == "sku"

        denied = await invoker.invoke(
            check, '{"sku": "ABC-001"}', step(3, granted_scopes=frozenset({"crm:read"}))
        )
        assert denied.outcome is CallOutcome.DENIED and "inventory:read" in denied.observation


async def test_the_sdk_validates_requests_itself(redis_url: str) -> None:
    async with served(inventory.build(), redis_url) as tools:
        reserve = tools.tool("Reserve")
        call = tools.channel.unary_unary(
            reserve.schema.grpc_path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reserve.schema.response_class.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(reserve.schema.request_class(order_id="x", sku="ABC-001", qty=0), timeout=5)
        error = from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in error.violations} == {"order_id", "qty"}


async def test_keyed_call_twice_with_the_same_key_has_one_side_effect(redis_url: str) -> None:
    async with served(inventory.build(), redis_url) as tools:
        invoker = ToolInvoker()
        reserve = tools.tool("Reserve")
        args = {"order_id": "ORD-12345", "sku": "ABC-001", "qty": 2}
        first = await invoker.invoke(reserve, args, step(4))
        second = await invoker.invoke(reserve, args, step(4))
        assert first.outcome is CallOutcome.OK and second.outcome is CallOutcome.DEDUPLICATED
        assert first.response == second.response
        assert tools.state["stock"]["ABC-001"] == 8 and len(tools.state["reservations"]) == 1
        third = await invoker.invoke(reserve, args, step(5))  # another step: another reservation
        assert third.outcome is CallOutcome.OK and tools.state["stock"]["ABC-001"] == 6

        reused = await invoker.invoke(reserve, {**args, "qty": 1}, step(4))
        assert reused.outcome is CallOutcome.ERROR and reused.reason == "IDEMPOTENCY_KEY_REUSED"

        refused = await invoker.invoke(reserve, {**args, "sku": "XYZ-900"}, step(6))
        again = await invoker.invoke(reserve, {**args, "sku": "XYZ-900"}, step(6))
        assert refused.status_code == again.status_code == "FAILED_PRECONDITION"
        assert again.outcome is CallOutcome.ERROR  # a final failure replays (as the same error)


async def test_stored_results_expire_after_the_configured_window(redis_url: str, redis_client: Any) -> None:
    """AGENTMESH_IDEMPOTENCY_WINDOW reaches the SDK's store (the soak found it stuck at 24 h)."""
    async with served(inventory.build(), redis_url, idempotency_window_s=30) as tools:
        args = {"order_id": "ORD-12345", "sku": "ABC-001", "qty": 1}
        assert (await ToolInvoker().invoke(tools.tool("Reserve"), args, step(4))).outcome is CallOutcome.OK
    (key,) = [k async for k in redis_client.scan_iter(match="am:{i:*")]
    assert 0 < await redis_client.ttl(key) <= 30


async def test_concurrent_duplicates_run_the_side_effect_once(redis_url: str) -> None:
    app = dummy.build({"latency": "0.3s"})
    async with served(app, redis_url) as tools:
        invoker = ToolInvoker()
        act = tools.tool("Act")
        results = await asyncio.gather(*(invoker.invoke(act, {"action": "x"}, step(7)) for _ in range(2)))
        assert sorted(r.outcome.name for r in results) == ["DEDUPLICATED", "OK"]
        assert tools.state.effects == 1
        assert {r.response["effect"] for r in results if r.response} == {"1"}  # int64 as string


async def test_transient_failures_are_retried_for_read_only_tools(redis_url: str) -> None:
    async with served(dummy.build({"fail_next": 2}), redis_url) as tools:
        sleeps = Sleeps()
        result = await ToolInvoker(sleep=sleeps).invoke(tools.tool("Echo"), {"message": "hi"}, step(8))
        assert result.outcome is CallOutcome.OK and result.attempts == 3 and len(sleeps.delays) == 2
        assert tools.state.calls == 3


async def test_resource_exhausted_waits_for_the_retry_info_delay(redis_url: str) -> None:
    async with served(dummy.build({"exhaust_next": 1, "retry_after": "0.4s"}), redis_url) as tools:
        sleeps = Sleeps()
        result = await ToolInvoker(sleep=sleeps).invoke(tools.tool("Echo"), {"message": "hi"}, step(9))
        assert result.outcome is CallOutcome.OK and result.attempts == 2
        assert sleeps.delays[0] >= 0.4


async def test_non_idempotent_ambiguous_failure_is_outcome_unknown(redis_url: str) -> None:
    async with served(dummy.build({"fail_next": 1}), redis_url) as tools:
        result = await ToolInvoker().invoke(
            tools.tool("ActOnce"), {"action": "pay"}, CallContext(deadline=time.time() + 5)
        )
        assert result.outcome is CallOutcome.UNKNOWN and result.attempts == 1
        assert "do not repeat" in json.loads(result.observation)["outcome"]
        assert tools.state.calls == 1


async def test_non_idempotent_call_that_was_never_sent_is_retried(redis_url: str) -> None:
    async with served(dummy.build(), redis_url) as tools:
        once = tools.tool("ActOnce")
        dead = ResolvedTool(once.spec, once.schema, None)
        dead.spec.endpoint = f"127.0.0.1:{free_port()}"
        from agentmesh.kit.channels import create_channel

        dead.channel = create_channel(dead.spec.endpoint)
        try:
            sleeps = Sleeps()
            result = await ToolInvoker(sleep=sleeps).invoke(
                dead, {"action": "pay"}, CallContext(deadline=time.time() + 5)
            )
        finally:
            await dead.channel.close()
        assert result.outcome is CallOutcome.ERROR and result.status_code == "UNAVAILABLE"
        assert result.attempts == 3  # nothing was sent, so retrying was safe


async def test_the_remaining_deadline_reaches_the_tool(redis_url: str) -> None:
    async with served(dummy.build(), redis_url) as tools:
        invoker = ToolInvoker()
        # Seconds apart, so a stalled machine cannot blur which one reached the tool.
        await invoker.invoke(tools.tool("Echo", timeout_s=30), {}, CallContext(deadline=time.time() + 8))
        assert 0 < tools.state.last_remaining < 9  # the task deadline, not the 30 s tool timeout
        await invoker.invoke(tools.tool("Echo", timeout_s=8), {}, CallContext(deadline=time.time() + 60))
        assert 0 < tools.state.last_remaining < 9  # the tool timeout, not the 60 s task deadline


async def test_metadata_reaches_the_tool(redis_url: str) -> None:
    async with served(dummy.build(), redis_url) as tools:
        call = CallContext(task_id="t-9", step=3, deadline=time.time() + 10, token="tok", approval="act-1")
        await ToolInvoker().invoke(tools.tool("Act"), {"action": "x"}, call)
        seen = tools.state.last_metadata
        assert seen[md.IDEMPOTENCY_KEY] == "t-9:3" and seen[md.TASK_ID] == "t-9" and seen[md.STEP] == "3"
        # With a token the approval travels only inside it (its `approval` claim), never as a header.
        assert seen[md.AUTHORIZATION] == "Bearer tok" and md.APPROVAL not in seen
        await ToolInvoker().invoke(tools.tool("Echo"), {}, call)
        assert md.IDEMPOTENCY_KEY not in tools.state.last_metadata  # read-only: no key
        # `mint` makes the token from the request about to be sent; it wins over `token`.
        minted: list[tuple[str, bytes]] = []

        def mint(spec: Any, request: Any) -> str:
            minted.append((spec.name, request.SerializeToString(deterministic=True)))
            return "minted"

        await ToolInvoker().invoke(tools.tool("Act"), {"action": "y"}, replace(call, step=4, mint=mint))
        assert tools.state.last_metadata[md.AUTHORIZATION] == "Bearer minted"
        assert minted == [
            ("dummy_act", tools.app.message("dummy.v1.ActRequest")(action="y").SerializeToString())
        ]
        # An unauthenticated (development) call names its approval in the header.
        await ToolInvoker().invoke(tools.tool("Act"), {"action": "z"}, replace(call, step=5, token=None))
        assert tools.state.last_metadata[md.APPROVAL] == "act-1"


async def test_succeed_then_time_out_is_replayed_not_repeated(redis_url: str) -> None:
    async with served(dummy.build({"succeed_then_hang_next": 1}), redis_url) as tools:
        act = tools.tool("Act", timeout_s=0.5, max_attempts=5)
        result = await ToolInvoker().invoke(act, {"action": "ship"}, step(10))
        assert result.outcome is CallOutcome.DEDUPLICATED, result
        assert result.attempts >= 2 and tools.state.effects == 1


async def test_approval_static_and_dynamic(redis_url: str) -> None:
    async with served(payments.build(approval_limit_cents=1000), redis_url) as tools:
        invoker = ToolInvoker()
        refund = tools.tool("Refund")
        args = {"charge_id": "ch_ORD-12345", "amount_cents": 2450, "reason": "broken mug"}
        waiting = await invoker.invoke(refund, args, step(11))
        assert waiting.outcome is CallOutcome.AWAITING_APPROVAL and waiting.reason == "APPROVAL_REQUIRED"
        assert tools.state["ch_ORD-12345"]["refunded_cents"] == 0
        approved = await invoker.invoke(refund, args, step(11, approval="action-1"))
        assert approved.outcome is CallOutcome.OK and approved.response["refund"]["approved"] is True
        again = await invoker.invoke(refund, args, step(11, approval="action-1"))
        assert (
            again.outcome is CallOutcome.DEDUPLICATED
            and tools.state["ch_ORD-12345"]["refunded_cents"] == 2450
        )

        gated = tools.tool("GetCharge", requires_approval=True)
        parked = await invoker.invoke(gated, {"charge_id": "ch_ORD-12345"}, step(12))
        assert parked.outcome is CallOutcome.AWAITING_APPROVAL and parked.attempts == 0


async def test_circuit_breaker_fails_fast_then_probes(redis_url: str) -> None:
    async with served(dummy.build({"unavailable_rate": 1.0}), redis_url) as tools:
        now = [0.0]  # the breakers' clock: time passes only when the test says so
        board = BreakerBoard(failure_threshold=3, reset_after_s=30, clock=lambda: now[0])
        invoker = ToolInvoker(breakers=board)
        echo = tools.tool("Echo", max_attempts=1)
        for _ in range(3):
            assert (await invoker.invoke(echo, {}, step(13))).status_code == "UNAVAILABLE"
        calls = tools.state.calls
        fast = await invoker.invoke(echo, {}, step(14))
        assert fast.reason == "CIRCUIT_OPEN" and fast.retry_after and tools.state.calls == calls
        assert board.for_endpoint(echo.endpoint, echo.name).state is BreakerState.OPEN
        tools.state.configure({})
        now[0] = 29.9  # not yet: still failing fast
        still_open = await invoker.invoke(echo, {}, step(15))
        assert still_open.reason == "CIRCUIT_OPEN" and tools.state.calls == calls
        now[0] = 30.0  # the reset time has passed: one probe goes through and closes the breaker
        assert (await invoker.invoke(echo, {}, step(15))).outcome is CallOutcome.OK
        assert board.for_endpoint(echo.endpoint, echo.name).state is BreakerState.CLOSED


async def test_side_effect_class_unspecified_is_treated_as_non_idempotent(redis_url: str) -> None:
    async with served(dummy.build({"fail_next": 1}), redis_url) as tools:
        act = tools.tool("Act", side_effect=tool_options_pb2.SIDE_EFFECT_UNSPECIFIED)
        result = await ToolInvoker().invoke(act, {"action": "x"}, step(16))
        assert result.outcome is CallOutcome.UNKNOWN


async def test_the_tools_rate_limit_waits_within_the_deadline(redis_url: str, redis_client: Any) -> None:
    from memory.rate_limits import RateLimiter
    from tool_registry.invoke import limiter_gate

    async with served(dummy.build(), redis_url) as tools:
        echo = tools.tool("Echo")
        echo.spec.rate_limit.requests_per_second = 2
        echo.spec.rate_limit.burst = 1
        invoker = ToolInvoker(rate_limit=limiter_gate(RateLimiter(redis_client)))
        call = CallContext(tenant="t", user="u", deadline=time.time() + 10)
        started = time.monotonic()
        results = [await invoker.invoke(echo, {}, call) for _ in range(3)]
        assert all(r.outcome is CallOutcome.OK for r in results)
        assert time.monotonic() - started >= 0.5  # two waits of ~0.5 s for a 2/s bucket of 1
        # The bucket is empty now; at 0.01/s no stall of the machine refills it before the next call.
        echo.spec.rate_limit.requests_per_second = 0.01
        short = await invoker.invoke(echo, {}, CallContext(tenant="t", user="u", deadline=time.time() + 5))
        assert short.outcome is CallOutcome.ERROR and short.reason == "RATE_LIMITED" and short.retry_after

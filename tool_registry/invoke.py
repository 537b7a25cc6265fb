"""Dynamic invocation: model JSON arguments -> a generic unary gRPC call -> JSON for the model.

    invoker = ToolInvoker()
    tool = await resolver.resolve("payments_refund", "^1")
    result = await invoker.invoke(tool, '{"charge_id": "ch_1", "amount_cents": 500}',
                                  CallContext(task_id=task.task_id, step=7, deadline=task_deadline))
    result.outcome      # ToolOutcome: OK, INVALID_ARGUMENTS, ERROR, DENIED, DEDUPLICATED,
                        #              AWAITING_APPROVAL, UNKNOWN
    result.observation  # JSON text to feed back to the model

One invocation:

1. scopes (when the caller's are given), arguments -> request (tool_registry.arguments),
   `requires_approval` without an approval -> AWAITING_APPROVAL, no call made;
2. the tool's rate limit (a hook: memory.rate_limits waits within the deadline);
3. the endpoint's circuit breaker (open -> fast ERROR with a retry hint);
4. attempts: each waits for a READY channel (else "not sent"), then calls
   `channel.unary_unary(path)` with the remaining deadline (min of the tool's
   timeout and the task's deadline) and metadata: traceparent, idempotency-key
   (task id + step, every side-effecting class), authorization (the tool token, minted per
   call by `CallContext.mint`, carrying the approval claim), x-agentmesh-task-id / -step;
5. retries per tool_registry.retry (side-effect class, RetryInfo, full-jitter
   backoff bounded by the RetryPolicy and the deadline), via tenacity;
6. the response as JSON (proto field names) under a size cap, or a compact
   error summary; FAILED_PRECONDITION/APPROVAL_REQUIRED from the tool (dynamic
   approval, e.g. a refund above a limit) -> AWAITING_APPROVAL.

Nothing here raises for a tool's failure: every ending is a ToolResult.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry import propagate, trace
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from agentmesh.kit import metadata as md
from agentmesh.kit import metrics, tracing
from agentmesh.kit.errors import (
    AgentmeshError,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    from_rpc_error,
    reason_name,
)
from agentmesh.v1 import errors_pb2, task_pb2, tool_options_pb2, tool_pb2
from memory.rate_limits import RateLimiter, tool_limits
from tool_registry.arguments import ArgumentConverter, violations_observation
from tool_registry.breaker import BreakerBoard, CircuitBreaker
from tool_registry.descriptors import ToolSchema
from tool_registry.retry import RetryDecision, ToolBackoff, retry_decision

log = logging.getLogger(__name__)
tracer = trace.get_tracer("agentmesh.tools")

DEFAULT_TIMEOUT_S = 10.0
MAX_OBSERVATION_BYTES = 64 * 1024
PREVIEW_CHARS = 4096
CIRCUIT_OPEN = "CIRCUIT_OPEN"
APPROVAL_REQUIRED = reason_name(errors_pb2.ERROR_REASON_APPROVAL_REQUIRED)
SIDE_EFFECT_NAMES = {
    value.number: value.name.removeprefix("SIDE_EFFECT_")
    for value in tool_options_pb2.SideEffect.DESCRIPTOR.values
}


class CallOutcome(enum.IntEnum):
    """How a tool call ended: the values of agentmesh.v1.ToolOutcome (Step.outcome)."""

    OK = task_pb2.TOOL_OUTCOME_OK
    INVALID_ARGUMENTS = task_pb2.TOOL_OUTCOME_INVALID_ARGUMENTS
    ERROR = task_pb2.TOOL_OUTCOME_ERROR
    DENIED = task_pb2.TOOL_OUTCOME_DENIED
    DEDUPLICATED = task_pb2.TOOL_OUTCOME_DEDUPLICATED
    AWAITING_APPROVAL = task_pb2.TOOL_OUTCOME_AWAITING_APPROVAL
    REJECTED = task_pb2.TOOL_OUTCOME_REJECTED
    UNKNOWN = task_pb2.TOOL_OUTCOME_UNKNOWN


@dataclass
class ResolvedTool:
    """A tool version ready to call: its spec, schema, a channel to its endpoint (None: unbound)."""

    spec: tool_pb2.ToolSpec
    schema: ToolSchema
    channel: grpc.aio.Channel | None
    converter: ArgumentConverter = field(init=False, repr=False)
    backoff: ToolBackoff = field(init=False, repr=False)
    _call: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.converter = ArgumentConverter(self.schema)
        self.backoff = ToolBackoff.of(self.spec)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def endpoint(self) -> str:
        return self.spec.endpoint

    def unary(self) -> Any:
        """The generic multicallable for the method (built once per channel)."""
        if self._call is None or self._call[0] is not self.channel:
            assert self.channel is not None
            callable_ = self.channel.unary_unary(
                self.schema.grpc_path,
                request_serializer=_serialize,
                response_deserializer=self.schema.response_class.FromString,
            )
            self._call = (self.channel, callable_)
        return self._call[1]


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


# (the tool's spec, the request message to send) -> the tool token (a JWT).
TokenMinter = Callable[[tool_pb2.ToolSpec, Message], str]


@dataclass(frozen=True)
class CallContext:
    """Who calls, for which task step, until when."""

    task_id: str = ""
    step: int | None = None
    # Absolute deadline, epoch seconds (time.time()); None: only the tool's own timeout.
    deadline: float | None = None
    # The tool token (`aud` = tool name), sent as `authorization: Bearer …`; or, better, `mint`.
    token: str | None = None
    # Mints the tool token for this call from the spec and the request about to be sent (after
    # the arguments are converted, so an approval claim can bind `arguments_digest(request)`).
    # Called once per invocation; every attempt sends the same token. Wins over `token`.
    mint: TokenMinter | None = None
    # The pending action id that approved this call (after ResumeTask). The approval itself
    # travels only as the tool token's `approval` claim; sent as x-agentmesh-approval only on an
    # unauthenticated call (a mesh running with AGENTMESH_INSECURE_NO_AUTH).
    approval: str | None = None
    tenant: str = ""
    user: str = ""
    # The caller's scopes; when given, a tool needing others is DENIED without a call.
    granted_scopes: frozenset[str] | None = None
    # The model's tool-call id (for spans and logs).
    call_id: str = ""
    # Extra request metadata, e.g. the caller and the next delegation depth on a call to
    # another agent (`agent_<domain>`), until delegation tokens carry them.
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def idempotency_key(self) -> str:
        return f"{self.task_id}:{self.step}" if self.task_id and self.step is not None else ""

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()


# (spec, call) -> returns when the call may go, or raises ResourceExhausted (retry_after).
RateLimitGate = Callable[[tool_pb2.ToolSpec, CallContext], Awaitable[object]]


def limiter_gate(limiter: RateLimiter, *, default_wait_s: float = DEFAULT_TIMEOUT_S) -> RateLimitGate:
    """The gate for memory.rate_limits: wait for the tool's bucket (RateLimitPolicy from its schema)
    within the task's deadline, or RESOURCE_EXHAUSTED (RATE_LIMITED) once the wait would pass it."""

    async def gate(spec: tool_pb2.ToolSpec, call: CallContext) -> object:
        policy = spec.rate_limit if spec.HasField("rate_limit") else None
        limits = tool_limits(spec.name, policy, tenant=call.tenant, user=call.user)
        if not limits:
            return None
        deadline = call.deadline if call.deadline is not None else time.time() + default_wait_s
        return await limiter.acquire(limits, deadline=deadline)

    return gate


@dataclass(frozen=True)
class ToolResult:
    """How one invocation ended; `observation` is what the model is shown."""

    tool: str
    version: str
    outcome: CallOutcome
    observation: str
    response: dict[str, Any] | None = None
    message: Message | None = None
    status_code: str = ""
    reason: str = ""
    attempts: int = 0
    violations: tuple[FieldViolation, ...] = ()
    retry_after: float | None = None
    error: AgentmeshError | None = None
    duration_s: float = 0.0
    idempotency_key: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (CallOutcome.OK, CallOutcome.DEDUPLICATED)

    @property
    def summary(self) -> str:
        """One line for humans (Step.summary)."""
        if self.ok:
            suffix = (
                " (replayed: the side effect did not run again)"
                if self.outcome is CallOutcome.DEDUPLICATED
                else ""
            )
            return f"{self.tool} answered{suffix}"
        detail = self.error.message if self.error is not None else self.reason
        return f"{self.tool}: {self.outcome.name.lower()} {self.status_code} {detail}".strip()[:300]


class _Attempt(Exception):
    """One failed attempt, with what the retry decision needs."""

    def __init__(self, error: AgentmeshError, sent: bool, verdict: RetryDecision) -> None:
        super().__init__(error.message)
        self.error = error
        self.sent = sent
        self.verdict = verdict


class _RetryAttempt(_Attempt):
    pass


def _error_observation(error: AgentmeshError, outcome: CallOutcome) -> str:
    summary: dict[str, Any] = {"error": error.code.name, "message": error.message[:500]}
    if error.reason:
        summary["reason"] = error.reason
    if error.violations:
        summary["violations"] = [
            {"field": v.field, "problem": v.description[:200]} for v in error.violations[:20]
        ]
    if error.retry_after is not None:
        summary["retry_after_s"] = round(error.retry_after, 3)
    if outcome is CallOutcome.UNKNOWN:
        summary["outcome"] = "unknown: the call may or may not have taken effect; do not repeat it"
    return json.dumps(summary, ensure_ascii=False, separators=(",", ":"))


class ToolInvoker:
    """Calls resolved tools. One per agent process: it owns the per-endpoint circuit breakers."""

    def __init__(
        self,
        *,
        breakers: BreakerBoard | None = None,
        rate_limit: RateLimitGate | None = None,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        max_observation_bytes: int = MAX_OBSERVATION_BYTES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.breakers = breakers or BreakerBoard()
        self.rate_limit = rate_limit
        self.default_timeout_s = default_timeout_s
        self.max_observation_bytes = max_observation_bytes
        self._sleep = sleep
        self._rng = rng
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._histograms: dict[str, Any] = {}

    async def invoke(
        self, tool: ResolvedTool, arguments: str | bytes | Mapping[str, Any] | None, call: CallContext
    ) -> ToolResult:
        started = time.perf_counter()
        if not tracing.enabled():  # no span to record: skip the no-op span's cost
            result = await self._invoke(tool, arguments, call, started)
            self._record(tool.name, result)
            return result
        with tracer.start_as_current_span(
            f"execute_tool {tool.name}",
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool.name,
                "gen_ai.tool.call.id": call.call_id,
                "agentmesh.tool.version": tool.version,
                "rpc.method": tool.schema.method_name,
            },
        ) as span:
            result = await self._invoke(tool, arguments, call, started)
            span.set_attribute("agentmesh.tool.outcome", result.outcome.name)
            span.set_attribute("agentmesh.tool.attempts", result.attempts)
            if result.status_code:
                span.set_attribute("rpc.grpc.status_code", result.status_code)
            if result.outcome in (CallOutcome.ERROR, CallOutcome.UNKNOWN):
                span.set_attribute("error.type", result.status_code or result.outcome.name)
                span.set_status(
                    trace.Status(trace.StatusCode.ERROR, result.status_code or result.outcome.name)
                )
        self._record(tool.name, result)
        return result

    def _record(self, name: str, result: ToolResult) -> None:
        key = (name, result.outcome.name, result.status_code or "OK")
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.TOOL_CALLS.labels(*key)
        counter.inc()
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = self._histograms[name] = metrics.TOOL_CALL_DURATION.labels(name)
        histogram.observe(result.duration_s)

    async def _invoke(
        self,
        tool: ResolvedTool,
        arguments: str | bytes | Mapping[str, Any] | None,
        call: CallContext,
        started: float,
    ) -> ToolResult:
        spec = tool.spec

        def ending(outcome: CallOutcome, observation: str, **extra: Any) -> ToolResult:
            return ToolResult(
                tool=tool.name,
                version=tool.version,
                outcome=outcome,
                observation=observation,
                duration_s=time.perf_counter() - started,
                idempotency_key=self._key(spec, call),
                **extra,
            )

        if call.granted_scopes is not None:
            missing = sorted(set(spec.required_scopes) - call.granted_scopes)
            if missing:
                # What the model sees: plain, so no wording of a prompt gets past it.
                error = AgentmeshError(f"not permitted: needs {', '.join(missing)}")
                observation = json.dumps({"error": error.message, "missing_scopes": missing})
                return ending(CallOutcome.DENIED, observation, reason="MISSING_SCOPE", error=error)
        try:
            request = tool.converter.convert(arguments)
        except InvalidArgument as exc:
            return ending(
                CallOutcome.INVALID_ARGUMENTS,
                violations_observation(exc.violations),
                status_code="INVALID_ARGUMENT",
                reason="INVALID_ARGUMENTS",
                violations=exc.violations,
                error=exc,
            )
        self._fill_agent_request_id(tool, request, call)
        if spec.requires_approval and not call.approval:
            observation = json.dumps(
                {
                    "status": "awaiting_approval",
                    "tool": tool.name,
                    "message": "this tool needs a human approval",
                }
            )
            return ending(CallOutcome.AWAITING_APPROVAL, observation, reason=APPROVAL_REQUIRED)
        if tool.channel is None or not tool.endpoint:
            error = Unavailable(f"tool {tool.name} {tool.version} has no endpoint bound")
            return ending(
                CallOutcome.ERROR,
                _error_observation(error, CallOutcome.ERROR),
                status_code="UNAVAILABLE",
                reason=error.reason,
                error=error,
            )
        if self.rate_limit is not None:
            try:
                await self.rate_limit(spec, call)
            except ResourceExhausted as exc:
                return ending(
                    CallOutcome.ERROR,
                    _error_observation(exc, CallOutcome.ERROR),
                    status_code=exc.code.name,
                    reason=exc.reason,
                    error=exc,
                    retry_after=exc.retry_after,
                )
        if call.mint is not None:
            call = dataclasses.replace(call, token=call.mint(spec, request), mint=None)
        breaker = self.breakers.for_endpoint(tool.endpoint, tool.name)
        return await self._attempts(tool, request, call, breaker, ending)

    async def _attempts(
        self,
        tool: ResolvedTool,
        request: Message,
        call: CallContext,
        breaker: CircuitBreaker,
        ending: Callable[..., ToolResult],
    ) -> ToolResult:
        backoff = tool.backoff
        # The first attempt runs outside tenacity: most calls need no retry, and setting up the
        # retry machinery costs more than the rest of the client side of a call.
        try:
            response, replayed = await self._attempt(tool, request, call, breaker, 1, backoff)
        except _RetryAttempt as first:
            return await self._retries(tool, request, call, breaker, ending, backoff, first)
        except _Attempt as failure:
            return self._failed(failure, 1, ending)
        return self._answered(tool, response, replayed, 1, ending)

    async def _retries(
        self,
        tool: ResolvedTool,
        request: Message,
        call: CallContext,
        breaker: CircuitBreaker,
        ending: Callable[..., ToolResult],
        backoff: ToolBackoff,
        first: _Attempt,
    ) -> ToolResult:
        """Attempts 2..max_attempts, with backoff (tenacity), within the deadline."""
        deadline = call.deadline
        delay = backoff.delay(1, retry_after=first.error.retry_after, rng=self._rng)
        if deadline is not None and time.time() + delay >= deadline:
            return self._failed(first, 1, ending)
        _count_retry(tool.name, first, 1)
        await self._sleep(delay)
        attempts = 1

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            retry_after = failure.error.retry_after if isinstance(failure, _Attempt) else None
            return backoff.delay(state.attempt_number + 1, retry_after=retry_after, rng=self._rng)

        def before_sleep(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            if isinstance(failure, _Attempt):
                _count_retry(tool.name, failure, state.attempt_number + 1)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(backoff.max_attempts - 1) | _StopBeforeDeadline(deadline),
            wait=wait,
            retry=retry_if_exception_type(_RetryAttempt),
            sleep=self._sleep,
            reraise=True,
            before_sleep=before_sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    response, replayed = await self._attempt(tool, request, call, breaker, attempts, backoff)
        except _Attempt as failure:
            return self._failed(failure, attempts, ending)
        return self._answered(tool, response, replayed, attempts, ending)

    async def _attempt(
        self,
        tool: ResolvedTool,
        request: Message,
        call: CallContext,
        breaker: CircuitBreaker,
        attempt: int,
        backoff: ToolBackoff,
    ) -> tuple[Message, bool]:
        spec = tool.spec

        def failed(error: AgentmeshError, sent: bool) -> _Attempt:
            verdict = retry_decision(
                spec.side_effect,
                error.code,
                attempt,
                sent,
                max_attempts=backoff.max_attempts,
                retry_info=error.retry_after is not None,
            )
            kind = _RetryAttempt if verdict is RetryDecision.RETRY else _Attempt
            return kind(error, sent, verdict)

        if not breaker.allow():
            error: AgentmeshError = Unavailable(
                f"{tool.endpoint} is failing; calls to it are paused (circuit open)",
                reason=CIRCUIT_OPEN,
                metadata={"endpoint": tool.endpoint},
                retry_after=breaker.retry_after() or None,
            )
            raise _Attempt(error, False, RetryDecision.FAIL)
        timeout = spec.timeout.seconds + spec.timeout.nanos / 1e9 or self.default_timeout_s
        remaining = call.remaining()
        if remaining is not None:
            timeout = min(timeout, remaining)
        if timeout <= 0:
            breaker.record(None)
            error = DeadlineExceeded("the task's deadline passed before the call could start")
            raise _Attempt(error, False, RetryDecision.FAIL)
        assert tool.channel is not None
        if not await _ready(tool.channel, timeout):
            breaker.record(grpc.StatusCode.UNAVAILABLE)
            raise failed(
                Unavailable(f"could not connect to {tool.endpoint}", metadata={"endpoint": tool.endpoint}),
                False,
            )
        remaining = call.remaining()
        if remaining is not None:
            timeout = min(timeout, remaining)
        pairs = self._metadata(spec, call)
        unary_call = tool.unary()(request, timeout=max(timeout, 0.001), metadata=pairs, wait_for_ready=False)
        try:
            response = await unary_call
            # Only a keyed call can be a replay (the SDK says so in trailing metadata).
            trailing = await unary_call.trailing_metadata() if self._key(spec, call) else None
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            breaker.record(error.code)
            raise failed(error, True) from None
        except asyncio.CancelledError:
            breaker.record(None)
            raise
        breaker.record(grpc.StatusCode.OK)
        replayed = any(key == md.REPLAYED for key, _ in (trailing or ()))
        return response, replayed

    # -- endings ------------------------------------------------------------------------

    def _answered(
        self,
        tool: ResolvedTool,
        response: Message,
        replayed: bool,
        attempts: int,
        ending: Callable[..., ToolResult],
    ) -> ToolResult:
        as_dict = json_format.MessageToDict(
            response, preserving_proto_field_name=True, descriptor_pool=tool.schema.pool
        )
        text = json.dumps(as_dict, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode())
        if size > self.max_observation_bytes:
            text = json.dumps(
                {
                    "truncated": True,
                    "size_bytes": size,
                    "note": "the answer was too large to show in full; this is its beginning",
                    "preview": text[:PREVIEW_CHARS],
                },
                ensure_ascii=False,
            )
        outcome = CallOutcome.DEDUPLICATED if replayed else CallOutcome.OK
        return ending(outcome, text, response=as_dict, message=response, attempts=attempts)

    @staticmethod
    def _failed(failure: _Attempt, attempts: int, ending: Callable[..., ToolResult]) -> ToolResult:
        error = failure.error
        if failure.verdict is RetryDecision.OUTCOME_UNKNOWN:
            outcome = CallOutcome.UNKNOWN
        elif error.code == grpc.StatusCode.FAILED_PRECONDITION and error.reason == APPROVAL_REQUIRED:
            outcome = CallOutcome.AWAITING_APPROVAL
        elif error.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            outcome = CallOutcome.DENIED
        else:
            outcome = CallOutcome.ERROR
        return ending(
            outcome,
            _error_observation(error, outcome),
            status_code=error.code.name,
            reason=error.reason,
            attempts=attempts,
            violations=error.violations,
            retry_after=error.retry_after,
            error=error,
        )

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _key(spec: tool_pb2.ToolSpec, call: CallContext) -> str:
        if spec.side_effect == tool_options_pb2.SIDE_EFFECT_READ_ONLY:
            return ""
        return call.idempotency_key

    def _metadata(self, spec: tool_pb2.ToolSpec, call: CallContext) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        key = self._key(spec, call)
        if key:
            pairs.append((md.IDEMPOTENCY_KEY, key))
        if call.task_id:
            pairs.append((md.TASK_ID, call.task_id))
        if call.step is not None:
            pairs.append((md.STEP, str(call.step)))
        if call.token:
            pairs.append((md.AUTHORIZATION, f"Bearer {call.token}"))
        elif call.approval:  # unauthenticated (development) calls only; see CallContext.approval
            pairs.append((md.APPROVAL, call.approval))
        pairs.extend(call.metadata)
        if not tracing.client_interceptors():  # the OTel interceptor injects when it is installed
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            pairs.extend((k.lower(), v) for k, v in carrier.items())
        return pairs

    @staticmethod
    def _fill_agent_request_id(tool: ResolvedTool, request: Message, call: CallContext) -> None:
        """Delegation (`agent_<domain>`, KEYED): RunRequest.request_id carries the idempotency key."""
        if tool.spec.kind != tool_pb2.TOOL_KIND_AGENT or not call.idempotency_key:
            return
        field = request.DESCRIPTOR.fields_by_name.get("request_id")
        if field is not None and not getattr(request, field.name):
            setattr(request, field.name, call.idempotency_key)


class _StopBeforeDeadline(stop_base):
    """Stop when the next backoff would end past the task's deadline (epoch seconds)."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        if self.deadline is None:
            return False
        return time.time() + (state.upcoming_sleep or 0.0) >= self.deadline


def _count_retry(tool: str, failure: _Attempt, attempt: int) -> None:
    code = failure.error.code.name
    metrics.TOOL_RETRIES.labels(tool, code).inc()
    log.info("retrying tool call", extra={"tool": tool, "code": code, "attempt": attempt})


async def _ready(channel: grpc.aio.Channel, timeout: float) -> bool:
    """Wait (at most `timeout`) for a READY channel; False when it cannot connect (nothing was sent)."""
    state = channel.get_state(try_to_connect=True)
    if state == grpc.ChannelConnectivity.READY:
        return True
    end = time.monotonic() + timeout
    while state != grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            return False
        left = end - time.monotonic()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), left)
        except TimeoutError:
            return False
        state = channel.get_state(try_to_connect=True)
    return True

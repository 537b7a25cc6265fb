"""The server edge: one interceptor every handler runs behind.

It is where the error map is applied, so nothing bypasses it:

- `AgentmeshError` -> its status code with google.rpc details;
- any other exception -> INTERNAL with an opaque error id (the traceback goes
  to the log under that id, never to the caller);
- requests holding undefined enum numbers -> INVALID_ARGUMENT naming the field;
- request bytes that do not decode (corrupt wire bytes, nesting beyond
  protobuf's recursion limit) -> INVALID_ARGUMENT: the deserializer is wrapped
  (`_tolerant`) so its failure reaches the handler wrapper instead of grpc.aio's
  UNKNOWN;
- the caller's identity: the `Authenticator` (agentmesh.kit.auth) verifies the
  bearer token and the method's scopes before any handler runs, and the
  verified `Principal` is what handlers read (`current_principal()`);
- unary calls beyond the replica's in-flight bound -> RESOURCE_EXHAUSTED with
  RetryInfo (backpressure instead of an unbounded queue);
- per-method counts, latency and in-flight gauge for Prometheus.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc
from grpc._cython import cygrpc

from agentmesh.kit import metrics, tracing
from agentmesh.kit.auth.gate import Authenticator
from agentmesh.kit.auth.principal import reset_current_principal, set_current_principal
from agentmesh.kit.errors import (
    AgentmeshError,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    internal_error,
    to_grpc_status,
)
from agentmesh.kit.validation import undefined_enum_violations
from agentmesh.v1 import errors_pb2

log = logging.getLogger(__name__)

Behavior = Callable[..., Any]
_AbortError = cygrpc.AbortError
# Retry hint for callers refused at the in-flight bound: short, because another
# replica (or this one, a moment later) usually has room.
OVERLOAD_RETRY_AFTER_S = 0.2


def _split(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class _Call:
    """Per-method bookkeeping, resolved once and reused for every call."""

    __slots__ = ("bounded", "duration", "full_method", "handled", "in_flight", "method", "service")

    def __init__(self, full_method: str, bounded: bool) -> None:
        self.full_method = full_method
        self.service, self.method = _split(full_method)
        self.duration = metrics.RPC_DURATION.labels(self.service, self.method)
        self.handled: dict[grpc.StatusCode, Any] = {}
        self.bounded = bounded
        self.in_flight = metrics.RPC_IN_FLIGHT.labels(self.service) if bounded else None

    def count(self, code: grpc.StatusCode) -> None:
        counter = self.handled.get(code)
        if counter is None:
            counter = self.handled[code] = metrics.RPC_HANDLED.labels(self.service, self.method, code.name)
        counter.inc()


class ServerEdgeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        *,
        max_in_flight: int = 0,
        bounded_services: Collection[str] = (),
        authenticator: Authenticator | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._max_in_flight = max_in_flight
        self._bounded_services = frozenset(bounded_services)
        self._in_flight = 0  # over every bounded service: the replica's limit
        self._by_service: dict[str, int] = {}  # what the gauge shows, per service
        self._cache: dict[str, tuple[Any, Any]] = {}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full_method: str = handler_call_details.method
        cached = self._cache.get(full_method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, full_method)
        self._cache[full_method] = (handler, wrapped)
        return wrapped

    # -- wrapping ---------------------------------------------------------

    def _wrap(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        service, _ = _split(full_method)
        streaming_response = handler.response_streaming
        call = _Call(full_method, bounded=service in self._bounded_services and not streaming_response)
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, call, check_request=True),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, call, check_request=False),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, call, check_request=True),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, call, check_request=False),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(self, behavior: Behavior, call: _Call, *, check_request: bool) -> Behavior:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            admitted = False
            identity = None
            try:
                identity = await self._authenticate(call, context)
                admitted = self._admit(call)
                if check_request:
                    _check_decoded(request)
                    _check_enums(request)
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                code = _code_of(context, grpc.StatusCode.OK)
                return result
            except BaseException as exc:
                code, status = _map_exception(exc, call, context)
                if status is not None:
                    await context.abort_with_status(status)  # raises AbortError
                raise
            finally:
                if identity is not None:
                    reset_current_principal(identity)
                if admitted:
                    self._release(call)
                _record(call, code, started)

        return handle

    def _stream(self, behavior: Behavior, call: _Call, *, check_request: bool) -> Behavior:
        # Handlers either are async generators or write with context.write();
        # grpc.aio treats the two differently, so the wrapper keeps the shape.
        if inspect.isasyncgenfunction(behavior):

            async def handle_generator(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                started = time.perf_counter()
                code = grpc.StatusCode.OK
                try:
                    await self._authenticate(call, context)  # the generator's own context: no reset needed
                    if check_request:
                        _check_decoded(request)
                        _check_enums(request)
                    async for item in behavior(request, context):
                        yield item
                    code = _code_of(context, grpc.StatusCode.OK)
                except BaseException as exc:
                    code, status = _map_exception(exc, call, context)
                    if status is not None:
                        await context.abort_with_status(status)  # raises AbortError
                    raise
                finally:
                    _record(call, code, started)

            return handle_generator
        return self._unary(behavior, call, check_request=check_request)

    # -- identity ---------------------------------------------------------

    async def _authenticate(self, call: _Call, context: grpc.aio.ServicerContext) -> Any:
        """Verify the caller and publish its principal; returns the context-variable token to reset."""
        if self._authenticator is None:
            return None
        principal = await self._authenticator.authenticate(call.full_method, context.invocation_metadata())
        return set_current_principal(principal)

    # -- backpressure -----------------------------------------------------

    def _admit(self, call: _Call) -> bool:
        if not call.bounded:
            return False
        if self._max_in_flight and self._in_flight >= self._max_in_flight:
            metrics.RPC_REJECTED_OVERLOAD.labels(call.service).inc()
            raise ResourceExhausted(
                f"this replica is handling {self._in_flight} calls, its limit; retry shortly",
                reason=errors_pb2.ERROR_REASON_OVERLOADED,
                metadata={"max_in_flight": str(self._max_in_flight)},
                retry_after=OVERLOAD_RETRY_AFTER_S,
            )
        self._count(call, +1)
        return True

    def _release(self, call: _Call) -> None:
        self._count(call, -1)

    def _count(self, call: _Call, change: int) -> None:
        # The gauge goes down as well as up: an HPA on it must see a burst end.
        self._in_flight += change
        count = self._by_service[call.service] = self._by_service.get(call.service, 0) + change
        assert call.in_flight is not None
        call.in_flight.set(count)


class _Undecodable:
    """What the wrapped deserializer hands on when the request bytes do not decode."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so a decoding failure becomes a value, not grpc.aio's UNKNOWN."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, RecursionError: anything the bytes can cause
            return _Undecodable(exc)

    return deserialize


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            "the request does not decode: corrupt bytes or nesting deeper than the protobuf limit (100)",
            violations=[FieldViolation("request", "does not decode as the method's request", "UNDECODABLE")],
        )


def _check_enums(request: Any) -> None:
    violations = undefined_enum_violations(request)
    if violations:
        raise InvalidArgument(
            f"undefined enum value in {', '.join(v.field for v in violations[:5])}", violations=violations
        )


def _code_of(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return candidate
    return default


def _map_exception(
    exc: BaseException, call: _Call, context: grpc.aio.ServicerContext
) -> tuple[grpc.StatusCode, grpc.Status | None]:
    """The status code to record and, when the call must be aborted, the status to send."""
    if isinstance(exc, _AbortError):  # the handler aborted on its own; its status stands
        return _code_of(context, grpc.StatusCode.UNKNOWN), None
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED, None
    if isinstance(exc, AgentmeshError):
        return exc.code, to_grpc_status(exc)
    if isinstance(exc, Exception):
        error_id = uuid.uuid4().hex[:16]
        metrics.UNEXPECTED_ERRORS.labels(call.service, call.method).inc()
        log.error(
            "unexpected error in /%s/%s",
            call.service,
            call.method,
            exc_info=exc,
            extra={"error_id": error_id, "rpc_method": f"{call.service}/{call.method}"},
        )
        error = internal_error(error_id)
        return error.code, to_grpc_status(error)
    return grpc.StatusCode.UNKNOWN, None


def _record(call: _Call, code: grpc.StatusCode, started: float) -> None:
    call.duration.observe(time.perf_counter() - started)
    call.count(code)
    if code is not grpc.StatusCode.OK:
        # The stock OTel server interceptor misses abort_with_status (how every error leaves).
        tracing.mark_failed(code.name, code.value[0])

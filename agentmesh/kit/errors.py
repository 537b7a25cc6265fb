"""The one error map: domain exceptions -> gRPC status with google.rpc details.

Code anywhere in the mesh raises an `AgentmeshError` subclass; the server edge
(`agentmesh.kit.interceptors`) turns it into a status with an ErrorInfo (reason +
domain), BadRequest field violations and RetryInfo where they apply. Anything
else that escapes a handler becomes INTERNAL with an opaque error id: plain
grpc.aio would answer UNKNOWN with the exception text, leaking internals.

Clients turn a failed call back into the same exception type with
`from_rpc_error`, so retry decisions are made on codes and reasons, never on
message text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from agentmesh.v1 import errors_pb2

ERROR_DOMAIN = "agentmesh"
_REASON_PREFIX = "ERROR_REASON_"


def reason_name(reason: int) -> str:
    """`ERROR_REASON_LIMIT_ABOVE_CAP` -> `LIMIT_ABOVE_CAP` (the ErrorInfo.reason string)."""
    return errors_pb2.ErrorReason.Name(reason).removeprefix(_REASON_PREFIX)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: `field` is a path like `limits.max_iterations`."""

    field: str
    description: str
    reason: str = ""


class AgentmeshError(Exception):
    """Base of every error that crosses a service boundary."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    default_reason: ClassVar[int] = errors_pb2.ERROR_REASON_INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: int | str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
        retry_after: float | None = None,
        domain: str = ERROR_DOMAIN,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is None:
            reason = self.default_reason
        self.reason = reason if isinstance(reason, str) else reason_name(reason)
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.retry_after = retry_after
        self.domain = domain

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgument(AgentmeshError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = errors_pb2.ERROR_REASON_INVALID_REQUEST


class NotFound(AgentmeshError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = errors_pb2.ERROR_REASON_TASK_NOT_FOUND


class AlreadyExists(AgentmeshError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = errors_pb2.ERROR_REASON_TOOL_VERSION_EXISTS


class FailedPrecondition(AgentmeshError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = errors_pb2.ERROR_REASON_INVALID_STATE


class ResourceExhausted(AgentmeshError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = errors_pb2.ERROR_REASON_RATE_LIMITED


class Aborted(AgentmeshError):
    code = grpc.StatusCode.ABORTED
    default_reason = errors_pb2.ERROR_REASON_IN_FLIGHT


class Unauthenticated(AgentmeshError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = errors_pb2.ERROR_REASON_UNAUTHENTICATED


class PermissionDenied(AgentmeshError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = errors_pb2.ERROR_REASON_MISSING_SCOPE


class Unavailable(AgentmeshError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE


class DeadlineExceeded(AgentmeshError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE


class Cancelled(AgentmeshError):
    code = grpc.StatusCode.CANCELLED
    default_reason = errors_pb2.ERROR_REASON_UNSPECIFIED


class DataLoss(AgentmeshError):
    code = grpc.StatusCode.DATA_LOSS
    default_reason = errors_pb2.ERROR_REASON_CORRUPT_DATA


class Internal(AgentmeshError):
    code = grpc.StatusCode.INTERNAL
    default_reason = errors_pb2.ERROR_REASON_INTERNAL


class Unimplemented(AgentmeshError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = errors_pb2.ERROR_REASON_UNSPECIFIED


class Unknown(AgentmeshError):
    """A peer answered with a status we do not model (client side only)."""

    code = grpc.StatusCode.UNKNOWN
    default_reason = errors_pb2.ERROR_REASON_UNSPECIFIED


_BY_CODE: dict[grpc.StatusCode, type[AgentmeshError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Aborted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        DataLoss,
        Internal,
        Unimplemented,
        Unknown,
    )
}
_CODE_BY_VALUE: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_for_code(code: grpc.StatusCode) -> type[AgentmeshError]:
    return _BY_CODE.get(code, Unknown)


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = math.floor(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


# What an error may quote of a caller's value (`echo`), and what any status
# carries at most (a safety net under every message, so nothing a caller sends
# comes back whole: a 100k-character id would otherwise be echoed in full).
MAX_ECHO_CHARS = 80
MAX_MESSAGE_CHARS = 1024
MAX_DETAIL_CHARS = 256


def echo(value: str, limit: int = MAX_ECHO_CHARS) -> str:
    """A caller-supplied value as an error message quotes it: its repr, cut at `limit` characters."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def to_status_proto(error: AgentmeshError) -> status_pb2.Status:
    """The google.rpc.Status for an error, details included (texts capped, see MAX_MESSAGE_CHARS)."""
    status = status_pb2.Status(code=error.code.value[0], message=_cap(error.message, MAX_MESSAGE_CHARS))
    metadata = {_cap(k, MAX_DETAIL_CHARS): _cap(v, MAX_DETAIL_CHARS) for k, v in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=error.domain, metadata=metadata)
    status.details.add().Pack(info)
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_cap(v.field, MAX_DETAIL_CHARS),
                    description=_cap(v.description, MAX_MESSAGE_CHARS),
                    reason=v.reason,
                )
                for v in error.violations
            ]
        )
        status.details.add().Pack(bad_request)
    if error.retry_after is not None:
        retry = error_details_pb2.RetryInfo(retry_delay=_duration(max(0.0, error.retry_after)))
        status.details.add().Pack(retry)
    return status


def to_grpc_status(error: AgentmeshError) -> grpc.Status:
    """A grpc.Status ready for `context.abort_with_status`."""
    return rpc_status.to_status(to_status_proto(error))


def internal_error(error_id: str) -> Internal:
    """What a caller sees for an unexpected exception: no text, type or traceback."""
    return Internal(f"internal error (error_id={error_id})", metadata={"error_id": error_id})


def from_status_proto(status: status_pb2.Status) -> AgentmeshError:
    """Rebuild the typed error from a google.rpc.Status (client side)."""
    code = _CODE_BY_VALUE.get(status.code, grpc.StatusCode.UNKNOWN)
    reason: str | None = None
    domain = ERROR_DOMAIN
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain or ERROR_DOMAIN, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    cls = error_for_code(code)
    return cls(
        status.message,
        reason=reason if reason is not None else "",
        metadata=metadata,
        violations=violations,
        retry_after=retry_after,
        domain=domain,
    )


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> AgentmeshError:
    """Turn a failed call into the typed error, keeping details when the peer sent them."""
    status = rpc_status.from_call(error)
    if status is not None:
        return from_status_proto(status)
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return error_for_code(code)(details or code.name, reason="")


# Codes that say nothing ran or it is safe to try again later. Used by retry
# predicates together with the tool's side-effect class.
TRANSIENT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)

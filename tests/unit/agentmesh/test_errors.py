from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from agentmesh.kit import errors
from agentmesh.kit.errors import FieldViolation, from_status_proto, to_status_proto
from agentmesh.v1 import errors_pb2


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_grpc_and_google_rpc_codes_agree(code: grpc.StatusCode) -> None:
    assert code_pb2.Code.Value(code.name) == code.value[0]


def test_reason_names_drop_the_enum_prefix() -> None:
    assert errors.reason_name(errors_pb2.ERROR_REASON_LIMIT_ABOVE_CAP) == "LIMIT_ABOVE_CAP"


def test_status_carries_error_info_bad_request_and_retry_info() -> None:
    error = errors.ResourceExhausted(
        "slow down",
        metadata={"limit": "tool:payments_refund"},
        retry_after=1.25,
        violations=[FieldViolation("limits.token_cap", "too high", "OUT_OF_RANGE")],
    )
    status = to_status_proto(error)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED and status.message == "slow down"
    kinds = {d.TypeName() for d in status.details}
    assert kinds == {"google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo"}
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("RATE_LIMITED", "agentmesh")


def test_round_trip_rebuilds_the_same_error() -> None:
    original = errors.InvalidArgument(
        "bad",
        reason=errors_pb2.ERROR_REASON_LIMIT_ABOVE_CAP,
        metadata={"cap": "max_iterations", "max": "12"},
        violations=[FieldViolation("limits.max_iterations", "is 20; the cap is 12")],
    )
    rebuilt = from_status_proto(to_status_proto(original))
    assert type(rebuilt) is errors.InvalidArgument
    assert rebuilt.reason == "LIMIT_ABOVE_CAP"
    assert rebuilt.metadata == original.metadata
    assert rebuilt.violations == original.violations
    assert rebuilt.retry_after is None


def test_retry_after_survives_sub_second_precision() -> None:
    rebuilt = from_status_proto(to_status_proto(errors.Aborted("in flight", retry_after=0.05)))
    assert rebuilt.retry_after == pytest.approx(0.05)
    assert rebuilt.reason == "IN_FLIGHT"


def test_every_status_code_has_an_error_class() -> None:
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        cls = errors.error_for_code(code)
        if code in {grpc.StatusCode.OUT_OF_RANGE}:
            assert cls is errors.Unknown
        else:
            assert cls.code is code


def test_internal_error_hides_everything_but_the_id() -> None:
    error = errors.internal_error("abc123")
    assert error.code is grpc.StatusCode.INTERNAL
    assert error.message == "internal error (error_id=abc123)"
    assert error.metadata == {"error_id": "abc123"}


def test_echo_quotes_short_values_whole_and_cuts_long_ones() -> None:
    assert errors.echo("t-1") == "'t-1'"
    long = "x" * 100_000
    quoted = errors.echo(long)
    assert quoted.startswith("'" + "x" * errors.MAX_ECHO_CHARS + "'") and "(100000 characters)" in quoted
    assert len(quoted) < errors.MAX_ECHO_CHARS + 40


def test_no_status_carries_a_caller_value_whole() -> None:
    long = "y" * 100_000
    error = errors.NotFound(
        f"task {long} not found",
        metadata={"task_id": long},
        violations=[FieldViolation(long, long)],
    )
    status = to_status_proto(error)
    assert len(status.SerializeToString()) < 4 * 1024
    assert status.message.endswith("(100015 characters)")
    rebuilt = from_status_proto(status)
    assert len(rebuilt.metadata["task_id"]) <= errors.MAX_DETAIL_CHARS + 40
    assert len(rebuilt.violations[0].field) <= errors.MAX_DETAIL_CHARS + 40

"""The pure side of rate limits: which buckets a call uses and where they live."""

from __future__ import annotations

import pytest
from redis.cluster import key_slot

from agentmesh.kit.config import RateSpec, Settings
from agentmesh.v1 import tool_options_pb2 as opts
from memory.rate_limits import Decision, Limit, LimitScope, admission_limits, hash_slot_tag, tool_limits


def slot(limit: Limit) -> int:
    return key_slot(limit.key.encode())


def test_a_tenants_buckets_share_one_slot() -> None:
    rate = RateSpec(1, 1)
    tenant_side = [
        Limit.tenant("acme", rate),
        Limit.user("acme", "u1", rate),
        Limit.domain("refunds", rate, tenant="acme"),
        Limit.tool_calls("payments_refund", rate, scope=opts.RATE_LIMIT_SCOPE_TENANT, tenant="acme"),
        Limit.tool_calls("payments_refund", rate, scope=opts.RATE_LIMIT_SCOPE_USER, tenant="acme", user="u1"),
    ]
    assert len({slot(limit) for limit in tenant_side}) == 1
    assert len({limit.key for limit in tenant_side}) == len(tenant_side)
    shared = Limit.tool_calls("payments_refund", rate, scope=opts.RATE_LIMIT_SCOPE_GLOBAL)
    assert hash_slot_tag(shared.key) == "rg:tool:payments_refund"
    assert hash_slot_tag(Limit.domain("refunds", rate).key) == "rg:domain:refunds"


def test_admission_limits_follow_settings() -> None:
    assert admission_limits(Settings.from_env({}), tenant="t", user="u", domain="refunds") == []
    settings = Settings.from_env(
        {
            "AGENTMESH_RATE_LIMIT_TENANT": "50/s:100",
            "AGENTMESH_RATE_LIMIT_USER": "30/min",
            "AGENTMESH_RATE_LIMIT_DOMAIN": "20",
        }
    )
    limits = admission_limits(settings, tenant="t", user="u", domain="refunds")
    assert [(lim.scope, lim.per_second, lim.burst) for lim in limits] == [
        (LimitScope.TENANT, 50, 100),
        (LimitScope.USER, 0.5, 1),
        (LimitScope.DOMAIN, 20, 20),
    ]


def test_tool_limits_from_the_schema_policy() -> None:
    assert tool_limits("x", None, tenant="t", user="u") == []
    assert tool_limits("x", opts.RateLimitPolicy(requests_per_second=0), tenant="t", user="u") == []
    [limit] = tool_limits(
        "crm_get",
        opts.RateLimitPolicy(requests_per_second=2.5, scope=opts.RATE_LIMIT_SCOPE_USER),
        tenant="t",
        user="u",
    )
    assert (limit.per_second, limit.burst, limit.tool) == (2.5, 3, "crm_get")
    assert limit.key.endswith(":tool:crm_get:user:u")


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        Limit("x", LimitScope.USER, "am:{r:t}:x", 0, 1)


def test_refusal_carries_retry_info() -> None:
    from google.rpc import error_details_pb2

    from agentmesh.kit.errors import to_status_proto

    limit = Limit.user("t", "u", RateSpec(1, 1))
    error = Decision(False, 0.25, limit, 0.0).error()
    assert error.reason == "RATE_LIMITED" and error.metadata == {"limit": "user", "scope": "user"}
    details = to_status_proto(error).details
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR))
    assert retry.retry_delay.nanos == 250_000_000
    Decision(True).raise_if_denied()

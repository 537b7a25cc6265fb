from __future__ import annotations

import json

from agentmesh.kit.channels import channel_options, service_config


def test_dns_targets_balance_round_robin() -> None:
    assert service_config("dns:///refunds-headless:50061", control_plane=False) == {
        "loadBalancingConfig": [{"round_robin": {}}]
    }
    assert service_config("localhost:50061", control_plane=False) == {}


def test_retry_policy_only_for_control_plane() -> None:
    tool = dict(channel_options("payments:50071", control_plane=False))
    assert "grpc.service_config" not in tool
    control = json.loads(dict(channel_options("registry:50051", control_plane=True))["grpc.service_config"])
    policy = control["methodConfig"][0]["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] >= 2


def test_keepalive_is_set() -> None:
    options = dict(channel_options("x:1", control_plane=False))
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_permit_without_calls"] == 1

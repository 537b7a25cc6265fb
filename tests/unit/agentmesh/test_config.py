from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.config import ConfigError, Role, Settings, reference_markdown

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_follow_the_port_rules() -> None:
    registry = Settings.from_env({"AGENTMESH_ROLE": "registry"})
    assert registry.role is Role.REGISTRY
    assert (registry.effective_grpc_port, registry.effective_http_port, registry.effective_health_port) == (
        50051,
        51051,
        52051,
    )
    agent = Settings.from_env({})
    assert agent.effective_grpc_port == 50061 and agent.effective_http_port == 51061


def test_port_zero_means_free_ports_everywhere() -> None:
    settings = Settings.from_env({"AGENTMESH_GRPC_PORT": "0"})
    assert settings.effective_http_port == 0 and settings.effective_health_port == 0


def test_explicit_http_port_wins() -> None:
    settings = Settings.from_env({"AGENTMESH_GRPC_PORT": "7000", "AGENTMESH_HTTP_PORT": "7100"})
    assert settings.effective_http_port == 7100


def test_empty_variables_count_as_unset() -> None:
    settings = Settings.from_env({"AGENTMESH_GRPC_PORT": "  ", "MODEL_NAME": ""})
    assert settings.grpc_port is None and settings.model_name is None


def test_errors_name_every_bad_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"AGENTMESH_GRPC_PORT": "abc", "AGENTMESH_ROLE": "wizard", "AGENTMESH_LOG_LEVEL": "loud"}
        )
    message = str(caught.value)
    assert "AGENTMESH_GRPC_PORT" in message and "'abc'" in message
    assert "AGENTMESH_ROLE" in message and "wizard" in message
    assert "AGENTMESH_LOG_LEVEL" in message


def test_port_range_is_checked() -> None:
    with pytest.raises(ConfigError, match="AGENTMESH_GRPC_PORT"):
        Settings.from_env({"AGENTMESH_GRPC_PORT": "70000"})


def test_tls_cert_and_key_go_together() -> None:
    with pytest.raises(ConfigError, match="must be set together"):
        Settings.from_env({"AGENTMESH_TLS_CERT": "/tmp/cert.pem"})


def test_overrides_win_over_environment() -> None:
    settings = Settings.from_env({"AGENTMESH_GRPC_PORT": "1234"}, grpc_port=0)
    assert settings.grpc_port == 0


def test_secrets_are_not_in_repr() -> None:
    settings = Settings.from_env({"AGENTMESH_SERVICE_TOKEN": "tok-secret", "MODEL_API_KEY": "sk-secret"})
    assert "secret" not in repr(settings)


def test_reference_docs_are_current() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == reference_markdown(), "run `agentmesh config docs > docs/configuration.md`"


def test_reference_lists_the_contract_variables() -> None:
    table = reference_markdown()
    for name in (
        "AGENTMESH_ROLE",
        "AGENTMESH_DOMAIN_SPEC",
        "AGENTMESH_GRPC_PORT",
        "AGENTMESH_HTTP_PORT",
        "AGENTMESH_ADVERTISE_ADDR",
        "AGENTMESH_REGISTRY",
        "REDIS_URL",
        "AGENTMESH_JWKS",
        "AGENTMESH_SIGNING_KEY",
        "AGENTMESH_SERVICE_TOKEN",
        "AGENTMESH_TLS_CERT",
        "AGENTMESH_TLS_KEY",
        "AGENTMESH_TLS_CA",
        "MODEL_BASE_URL",
        "MODEL_NAME",
        "MODEL_API_KEY",
    ):
        assert f"`{name}`" in table

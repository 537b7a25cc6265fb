"""What the local mesh runs: services, ports, environment (pure data, no I/O).

The ports are the one table in agentmesh/kit/config.py (DESIGN.md's local ports: registry
50051, agents from 50061, example tools from 50071, operator console HTTP 50080, scripted model
HTTP 50099, embedded Redis 6390); every HTTP side listener is gRPC port + 1000. `port_offset`
shifts every one of them, so a
second mesh can run beside the first (or outside the kernel's ephemeral range).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentmesh.kit.config import (
    AGENT_PORTS,
    CONSOLE_PORT,
    HTTP_PORT_OFFSET,
    MODEL_PORT,
    REDIS_PORT,
    REGISTRY_PORT,
    TOOL_PORTS,
)

# Where in the state directory the console's dev identities are written (`{label: token}`).
CONSOLE_DEV_TOKENS = "console-dev-tokens.json"

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAINS_DIR = REPO_ROOT / "agents" / "domains"
DEMO_SCRIPT = REPO_ROOT / "agents" / "scripts" / "demo.yaml"
# What `agentmesh up` runs by default: the example tools of the example stories (the training
# dummy last), the demo domains and the A2A conformance agent (no tools; any A2A client can run
# the conformance scenarios against it).
DEFAULT_TOOLS = ("crm", "payments", "email", "inventory", "shipping", "dummy")
DEFAULT_AGENTS = ("refunds", "fulfillment", "training", "conformance")


def default_agents() -> list[tuple[str, Path]]:
    return [(slug, DOMAINS_DIR / f"{slug}.yaml") for slug in DEFAULT_AGENTS]


def agent_ports(slugs: Sequence[str]) -> dict[str, int]:
    """Each domain's gRPC port: its fixed one, else the next one after every fixed port."""
    ports: dict[str, int] = {}
    spare = max(AGENT_PORTS.values()) + 1
    for slug in slugs:
        if slug in AGENT_PORTS:
            ports[slug] = AGENT_PORTS[slug]
        else:
            ports[slug] = spare
            spare += 1
    return ports


class ServiceKind(enum.StrEnum):
    REGISTRY = "registry"
    AGENT = "agent"
    TOOL = "tool"
    MODEL = "model"
    REDIS = "redis"
    CONSOLE = "console"


@dataclass(frozen=True)
class PlannedService:
    """One child process of the local mesh."""

    name: str
    kind: ServiceKind
    argv: Sequence[str]
    env: Mapping[str, str]
    grpc_port: int | None
    http_port: int | None
    health_service: str = ""
    # Started after every service of a lower tier is SERVING.
    tier: int = 0

    @property
    def grpc_target(self) -> str | None:
        return None if self.grpc_port is None else f"127.0.0.1:{self.grpc_port}"

    @property
    def http_target(self) -> str | None:
        return None if self.http_port is None else f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str | None:
        """Where a person opens it (the console), else None."""
        return (
            f"http://{self.http_target}/" if self.kind is ServiceKind.CONSOLE and self.http_target else None
        )


@dataclass(frozen=True)
class MeshOptions:
    redis_url: str
    model_base_url: str | None = None  # None: run the scripted model
    model_name: str = "scripted"
    model_script: Path | None = None
    agents: Sequence[tuple[str, Path]] = ()  # (domain slug, spec path)
    tools: Sequence[str] = ()  # example tool names: crm, payments, ...
    extra_env: Mapping[str, str] = field(default_factory=dict)
    port_offset: int = 0  # added to every port below
    # Agent processes per domain (default 1): replicas of one domain share its queue.
    replicas: Mapping[str, int] = field(default_factory=dict)
    # gRPC port (the model's HTTP port) by service name, instead of the local port rules;
    # the HTTP side listener stays at + 1000. Tests give every service a free port this way.
    ports: Mapping[str, int] = field(default_factory=dict)
    # Auth (on unless insecure_no_auth): the issuer key for the registry and the agents, its public
    # JWKS for everything else, and each process's service token by its service name.
    signing_key: Path | None = None
    jwks: Path | None = None
    service_tokens: Mapping[str, str] = field(default_factory=dict)
    insecure_no_auth: bool = False
    console: bool = True  # run the operator console
    # JSON {label: token} of the dev identities the console's sign-in page offers (written by
    # whoever mints them; the console re-reads it when it changes).
    console_dev_tokens: Path | None = None

    @property
    def registry_port(self) -> int:
        return self.ports.get("registry", REGISTRY_PORT + self.port_offset)

    @property
    def registry_address(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def model_port(self) -> int:
        return self.ports.get("model", MODEL_PORT + self.port_offset)

    @property
    def console_port(self) -> int:
        return CONSOLE_PORT + self.port_offset

    @property
    def redis_port(self) -> int:
        return REDIS_PORT + self.port_offset


def _serve(role: str) -> list[str]:
    return [sys.executable, "-m", "agentmesh", "serve", role]


def _base_env(options: MeshOptions, name: str, *, mints: bool = False) -> dict[str, str]:
    env = {
        "REDIS_URL": options.redis_url,
        "AGENTMESH_REGISTRY": options.registry_address,
        "AGENTMESH_BIND_HOST": "127.0.0.1",
        "AGENTMESH_SERVICE_NAME": name,
        "AGENTMESH_LOG_FORMAT": "json",
    }
    if options.insecure_no_auth:
        env["AGENTMESH_INSECURE_NO_AUTH"] = "true"
    if mints and options.signing_key is not None:
        env["AGENTMESH_SIGNING_KEY"] = str(options.signing_key)
    elif options.jwks is not None:
        env["AGENTMESH_JWKS"] = str(options.jwks)
    if name in options.service_tokens:
        env["AGENTMESH_SERVICE_TOKEN"] = options.service_tokens[name]
    return {**env, **options.extra_env}


def service_names(options: MeshOptions) -> list[str]:
    """The service name (AGENTMESH_SERVICE_NAME, a service token's `service:<name>`) of every process."""
    return [str(service.env["AGENTMESH_SERVICE_NAME"]) for service in build_plan(options)]


def build_plan(options: MeshOptions) -> list[PlannedService]:
    """The services of the local mesh, in start order (tiers)."""
    services = [
        PlannedService(
            name="registry",
            kind=ServiceKind.REGISTRY,
            argv=_serve("registry"),
            env={
                **_base_env(options, "registry", mints=True),
                "AGENTMESH_GRPC_PORT": str(options.registry_port),
            },
            grpc_port=options.registry_port,
            http_port=options.registry_port + HTTP_PORT_OFFSET,
            health_service="agentmesh.v1.ToolRegistryService",
            tier=0,
        )
    ]
    for tool in options.tools:
        port = options.ports.get(f"tool-{tool}", TOOL_PORTS[tool] + options.port_offset)
        services.append(
            PlannedService(
                name=f"tool-{tool}",
                kind=ServiceKind.TOOL,
                argv=_serve("tool"),
                env={
                    **_base_env(options, tool),
                    "AGENTMESH_TOOL": tool,
                    "AGENTMESH_GRPC_PORT": str(port),
                    "AGENTMESH_ADVERTISE_ADDR": f"127.0.0.1:{port}",
                },
                grpc_port=port,
                http_port=port + HTTP_PORT_OFFSET,
                tier=1,
            )
        )
    if options.model_base_url is None:
        env = {**_base_env(options, "model"), "AGENTMESH_GRPC_PORT": str(options.model_port)}
        if options.model_script is not None:
            env["AGENTMESH_MODEL_SCRIPT"] = str(options.model_script)
        services.append(
            PlannedService(
                name="model",
                kind=ServiceKind.MODEL,
                argv=_serve("model"),
                env=env,
                grpc_port=None,
                http_port=options.model_port,
                tier=1,
            )
        )
    if options.console:
        services.append(
            PlannedService(
                name="console",
                kind=ServiceKind.CONSOLE,
                argv=_serve("console"),
                env={
                    **_base_env(options, "console"),
                    "AGENTMESH_HTTP_PORT": str(options.console_port),
                    **(
                        {"AGENTMESH_CONSOLE_DEV_TOKENS": str(options.console_dev_tokens)}
                        if options.console_dev_tokens
                        else {}
                    ),
                },
                grpc_port=None,
                http_port=options.console_port,
                tier=1,
            )
        )
    model_url = options.model_base_url or f"http://127.0.0.1:{options.model_port}/v1"
    for name, domain, spec, port in _agent_processes(options):
        services.append(
            PlannedService(
                name=name,
                kind=ServiceKind.AGENT,
                argv=_serve("agent"),
                env={
                    **_base_env(options, domain, mints=True),
                    "AGENTMESH_DOMAIN_SPEC": str(spec),
                    "AGENTMESH_GRPC_PORT": str(port),
                    "AGENTMESH_ADVERTISE_ADDR": f"127.0.0.1:{port}",
                    "MODEL_BASE_URL": model_url,
                    "MODEL_NAME": options.model_name,
                },
                grpc_port=port,
                http_port=port + HTTP_PORT_OFFSET,
                health_service="agentmesh.v1.AgentService",
                tier=2,
            )
        )
    _check_ports(services, options)
    return services


def _check_ports(services: Sequence[PlannedService], options: MeshOptions) -> None:
    """Every port of the plan (gRPC, HTTP side listener, Redis) belongs to one service only: too many
    replicas would walk their ports into the tools' (agents 5006x, tools from 50071)."""
    owner: dict[int, str] = {} if options.redis_url else {options.redis_port: "redis"}
    clashes = []
    for service in services:
        for port in (service.grpc_port, service.http_port):
            if port is None:
                continue
            if port in owner and owner[port] != service.name:
                clashes.append(f"{service.name} and {owner[port]} on {port}")
            owner.setdefault(port, service.name)
    if clashes:
        raise ValueError(f"the local port table has no room for this plan: {'; '.join(clashes)}")


def agent_process_name(domain: str, replica: int, replicas: int) -> str:
    """`agent-<domain>`, or `agent-<domain>-<n>` (n from 1) when the domain runs several replicas."""
    return f"agent-{domain}" if replicas == 1 else f"agent-{domain}-{replica + 1}"


def _agent_processes(options: MeshOptions) -> list[tuple[str, str, Path, int]]:
    """(process name, domain, spec, gRPC port) of every agent replica.

    A domain's first replica has its domain port; further replicas take the ports after
    every domain's (as a domain without a fixed port does).
    """
    slugs = [domain for domain, _ in options.agents]
    ports = agent_ports(slugs)
    spare = max([*AGENT_PORTS.values(), *ports.values()]) + 1
    processes = []
    for domain, spec in options.agents:
        count = options.replicas.get(domain, 1)
        if count < 1:
            raise ValueError(f"domain {domain!r} needs at least one replica, not {count}")
        for replica in range(count):
            name = agent_process_name(domain, replica, count)
            if replica == 0:
                default = ports[domain]
            else:
                default, spare = spare, spare + 1
            port = options.ports.get(name, default + options.port_offset)
            processes.append((name, domain, spec, port))
    return processes


def ports_in_use(plan: Sequence[PlannedService]) -> list[int]:
    ports = []
    for service in plan:
        ports += [p for p in (service.grpc_port, service.http_port) if p is not None]
    return ports

"""A whole mesh as real processes for end-to-end tests and benchmarks.

valkey (the harness's), `agentmesh serve registry`, example tools
(`agentmesh serve tool`), the scripted model (`agentmesh serve model`) and
agents (`agentmesh serve agent`), each on free loopback ports, started tier by
tier and waited on by health (HTTP for the model), then until the registry
lists every tool and agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc

from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import REGISTRY_PORT
from agentmesh.kit.net import ephemeral_range, free_port_with_partner, port_bindable
from agentmesh.localmesh.plan import MeshOptions, build_plan, ports_in_use
from agentmesh.localmesh.proc import ServiceProcess
from agentmesh.v1 import tool_registry_service_pb2, tool_registry_service_pb2_grpc
from agents.spec import load_spec
from tests.support.auth import bearer, issuer, key_path

ROOT = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-m", "agentmesh", "serve"]
TOOL_SERVICES = {
    "crm": "crm.v1.Crm",
    "payments": "payments.v1.Payments",
    "email": "email.v1.Email",
    "inventory": "inventory.v1.Inventory",
    "shipping": "shipping.v1.Shipping",
    "dummy": "dummy.v1.Dummy",
}


@dataclass
class Mesh:
    logs: Path
    redis_url: str
    env: dict[str, str]
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    registry: str = ""
    model_url: str = ""
    agents: dict[str, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)

    def _process(
        self, name: str, role: str, port: int | None, env: Mapping[str, str], health: str = ""
    ) -> ServiceProcess:
        process = ServiceProcess(
            name=name,
            argv=[*SERVE, role],
            grpc_port=port,
            # Each process registers with its own service token (`service:<name>`, registry:write).
            env={**self.env, "AGENTMESH_SERVICE_TOKEN": issuer().service_token(name), **env},
            log_path=self.logs / f"{name}.log",
            health_service=health,
            cwd=ROOT,
        )
        self.processes[name] = process.start()
        return process

    async def start_registry(self) -> None:
        port = free_port_with_partner(1000)
        process = self._process(
            "registry",
            "registry",
            port,
            {"AGENTMESH_GRPC_PORT": str(port)},
            "agentmesh.v1.ToolRegistryService",
        )
        self.registry = process.target
        self.env["AGENTMESH_REGISTRY"] = self.registry
        await process.wait_serving(60)

    async def start_tools(
        self, names: Sequence[str], extra_env: Mapping[str, Mapping[str, str]] | None = None
    ) -> None:
        started = []
        for name in names:
            port = free_port_with_partner(1000)
            env = {
                "AGENTMESH_TOOL": name,
                "AGENTMESH_GRPC_PORT": str(port),
                "AGENTMESH_ADVERTISE_ADDR": f"127.0.0.1:{port}",
                **(extra_env or {}).get(name, {}),
            }
            started.append(self._process(f"tool-{name}", "tool", port, env, TOOL_SERVICES[name]))
            self.tools[name] = f"127.0.0.1:{port}"
        await asyncio.gather(*(p.wait_serving(60) for p in started))

    async def start_model(self, script: Path) -> None:
        port = free_port_with_partner(1000)
        self._process(
            "model", "model", None, {"AGENTMESH_MODEL_SCRIPT": str(script), "AGENTMESH_GRPC_PORT": str(port)}
        )
        self.model_url = f"http://127.0.0.1:{port}/v1"
        await wait_http(f"http://127.0.0.1:{port}/healthz", self.processes["model"])

    async def start_agents(
        self,
        specs: Sequence[Path],
        *,
        model_url: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        started = []
        for path in specs:
            slug = load_spec(path).slug
            port = free_port_with_partner(1000)
            env = {
                "AGENTMESH_DOMAIN_SPEC": str(path),
                "AGENTMESH_GRPC_PORT": str(port),
                "AGENTMESH_ADVERTISE_ADDR": f"127.0.0.1:{port}",
                "MODEL_BASE_URL": model_url or self.model_url,
                "MODEL_NAME": "scripted",
                **(extra_env or {}),
            }
            started.append(self._process(f"agent-{slug}", "agent", port, env, "agentmesh.v1.AgentService"))
            self.agents[slug] = f"127.0.0.1:{port}"
        await asyncio.gather(*(p.wait_serving(60) for p in started))

    async def wait_registered(
        self, tools: Sequence[str] = (), agents: Sequence[str] = (), timeout: float = 60
    ) -> None:
        await wait_registered(self.registry, tools=tools, agents=agents, timeout=timeout)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop(timeout=10)

    def log(self, name: str, lines: int = 60) -> str:
        return self.processes[name].log_tail(lines)


@contextlib.asynccontextmanager
async def running_mesh(
    redis_url: str,
    logs: Path,
    *,
    tools: Sequence[str],
    model_script: Path,
    agents: Sequence[Path],
    registered_tools: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Mesh]:
    """The whole mesh on `redis_url`, until the registry lists `registered_tools` and every agent."""
    # Auth on, as deployed: every process holds the session test key (tests/support/auth.py).
    base = {
        "REDIS_URL": redis_url,
        "AGENTMESH_BIND_HOST": "127.0.0.1",
        "AGENTMESH_SIGNING_KEY": str(key_path()),
        **(env or {}),
    }
    mesh = Mesh(logs=logs, redis_url=redis_url, env=base)
    try:
        await mesh.start_registry()
        await mesh.start_tools(tools)
        await mesh.start_model(model_script)
        await mesh.start_agents(agents)
        await mesh.wait_registered(tools=registered_tools, agents=list(mesh.agents))
        yield mesh
    finally:
        mesh.stop()


async def wait_registered(
    registry: str, *, tools: Sequence[str] = (), agents: Sequence[str] = (), timeout: float = 60
) -> None:
    """Until the registry resolves every named tool and agent (self-registration is asynchronous)."""
    deadline = time.monotonic() + timeout
    async with create_channel(registry, control_plane=True) as channel:
        stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
        missing = [*tools, *(f"agent:{slug}" for slug in agents)]
        while missing:
            still = []
            for name in missing:
                try:
                    if name.startswith("agent:"):
                        await stub.GetAgent(
                            tool_registry_service_pb2.GetAgentRequest(domain=name[6:]),
                            timeout=5,
                            metadata=bearer(),
                        )
                    else:
                        await stub.GetTool(
                            tool_registry_service_pb2.GetToolRequest(name=name), timeout=5, metadata=bearer()
                        )
                except grpc.aio.AioRpcError:
                    still.append(name)
            missing = still
            if missing:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not registered after {timeout:.0f}s: {missing}")
                await asyncio.sleep(0.1)


async def wait_http(url: str, process: ServiceProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while True:
            if not process.running():
                raise RuntimeError(f"{process.name} exited\n{process.log_tail()}")
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer after {timeout:.0f}s\n{process.log_tail()}")
            await asyncio.sleep(0.05)


def free_port_offset(options_at: Callable[[int], MeshOptions]) -> int:
    """The first `--port-offset` above the ephemeral range (in steps of 100) at which every port of
    the mesh `options_at(offset)` describes (Redis included) binds: a whole `agentmesh up` beside
    the default mesh's ports, out of reach of outgoing connections' local ends."""
    _, high = ephemeral_range()
    tried = []
    for offset in range(max(0, high + 1 - REGISTRY_PORT), 65_536, 100):
        options = options_at(offset)
        ports = [*ports_in_use(build_plan(options)), options.redis_port]
        if max(ports) > 65_535:
            break
        if all(port_bindable("127.0.0.1", p) for p in ports):
            return offset
        tried.append(offset)
    raise AssertionError(
        f"no free range for the local mesh above the ephemeral ports (offsets tried: {tried}); "
        "free some ports or lower net.ipv4.ip_local_port_range"
    )

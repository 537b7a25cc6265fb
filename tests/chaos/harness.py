"""The real-process chaos harness: the local mesh's supervisor with replicas, proxies and ledgers.

    async with chaos_mesh(tmp_path, agents={"training": 2}, tools=("dummy",)) as mesh:
        ids = [await mesh.submit("training", f"Act on k-{n}", f"r-{n}") for n in range(10)]
        await mesh.kill_holder("training")              # SIGKILL the replica running a task
        tasks = await mesh.wait_settled("training", ids)
        assert (await mesh.dummy_stats())["effects_by_action"] == ...

Every part is a real process started by `agentmesh.localmesh.supervisor.LocalMesh` from a
`build_plan` plan (the same code as `agentmesh up`): valkey (EmbeddedRedis, AOF as the test
chooses), the registry, the example tools with their in-memory side-effect ledgers, the
scripted model (agents/scripts/demo.yaml) and N replicas per agent domain, each on free
loopback ports. A `FaultProxy` can sit in front of any tool (the address it registers), the
registry (the address agents use) or Redis (the URL every service gets). Ledgers are read
directly from each tool's own port with the tool invoker, never through a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import HTTP_PORT_OFFSET
from agentmesh.kit.errors import AgentmeshError, ResourceExhausted, Unavailable
from agentmesh.kit.net import free_port_with_partner, port_bindable
from agentmesh.localmesh.devauth import SERVICE_SCOPES
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.plan import (
    DOMAINS_DIR,
    MeshOptions,
    PlannedService,
    ServiceKind,
    build_plan,
    service_names,
)
from agentmesh.localmesh.supervisor import LocalMesh, MeshStartError
from agentmesh.v1 import task_pb2, tool_pb2
from agents.client import AgentClient
from examples._common import load
from memory import keys
from memory.connection import AnyRedis, create_redis
from memory.tasks.queue import TaskQueue
from memory.tasks.stats import QueueStats
from memory.tasks.store import TaskConfig
from tests.chaos.proxy import FaultProxy
from tests.support.agent_mesh import wait_registered
from tests.support.auth import bearer, issuer, jwks_path, key_path, tool_minter
from tool_registry.invoke import CallContext, ResolvedTool, ToolInvoker
from tool_registry.registration import prepare

TENANT = "chaos"
TERMINAL = frozenset(
    {
        task_pb2.TASK_STATE_COMPLETED,
        task_pb2.TASK_STATE_FAILED,
        task_pb2.TASK_STATE_CANCELED,
        task_pb2.TASK_STATE_REJECTED,
    }
)
# What every chaos mesh's services get: quick recovery of a lost worker's task, and enough
# attempts that a task survives the kills a run aims at it.
CHAOS_ENV = {
    "AGENTMESH_CLAIM_IDLE_TIMEOUT": "2",
    "AGENTMESH_MAX_ATTEMPTS": "25",
    "AGENTMESH_LOG_FORMAT": "text",
    "AGENTMESH_DRAIN_GRACE": "2",
}
# Tool methods a ledger read calls (all read-only).
LEDGER_METHODS = {
    "dummy_stats": ("dummy", "Stats"),
    "inventory_list_reservations": ("inventory", "ListReservations"),
    "shipping_get_shipments": ("shipping", "GetShipments"),
    "email_list_outbox": ("email", "ListOutbox"),
    "payments_get_charge": ("payments", "GetCharge"),
}
TOOL_REGISTERED = {
    "dummy": "dummy_act",
    "inventory": "inventory_reserve",
    "shipping": "shipping_create_shipment",
    "email": "email_send",
    "payments": "payments_refund",
    "crm": "crm_get_order",
}


def outcome_unknown(task: task_pb2.Task) -> bool:
    """Parked because a NON_IDEMPOTENT call may or may not have happened: a human decides."""
    return (
        task.state == task_pb2.TASK_STATE_INPUT_REQUIRED
        and task.pending_action.kind == task_pb2.PENDING_ACTION_KIND_OUTCOME_UNKNOWN
    )


def settled(task: task_pb2.Task) -> bool:
    """Nothing more will happen to the task without a caller: terminal, or outcome unknown."""
    return task.state in TERMINAL or outcome_unknown(task)


@dataclass
class Kill:
    name: str  # the service killed
    at: float  # time.monotonic() of the SIGKILL
    task_id: str = ""  # the task it was running when it died (if one was picked)
    window: str = ""  # "in-call" (a side-effecting call in flight), "mid-task", "tool", ...
    attempt: int = 0  # the task's attempt when it died
    recovered_after: float | None = None  # seconds until another attempt took the task over


@dataclass
class ChaosMesh:
    mesh: LocalMesh
    redis: EmbeddedRedis | None  # None: the test runs its own (Sentinel, Cluster)
    redis_url: str  # what the harness uses (never through a proxy)
    proxies: dict[str, FaultProxy]
    tool_ports: dict[str, int]  # tool process name -> its own gRPC port
    shards: int
    kills: list[Kill] = field(default_factory=list)
    _client: AnyRedis | None = None
    _queues: dict[str, TaskQueue] = field(default_factory=dict)
    _clients: dict[str, AgentClient] = field(default_factory=dict)
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _invoker: ToolInvoker = field(default_factory=ToolInvoker)
    _ledger_tools: dict[tuple[str, str], ResolvedTool] = field(default_factory=dict)
    _submitted: int = 0
    submit_retries: int = 0  # UNAVAILABLE / RESOURCE_EXHAUSTED answers a submit retried

    # -- Redis and tasks -----------------------------------------------------------------------

    @property
    def store_redis(self) -> AnyRedis:
        if self._client is None:
            self._client = create_redis(self.redis_url)
        return self._client

    def queue(self, domain: str) -> TaskQueue:
        if domain not in self._queues:
            config = TaskConfig(shards=self.shards)
            self._queues[domain] = TaskQueue(self.store_redis, domain=domain, config=config)
        return self._queues[domain]

    def replicas(self, domain: str) -> list[str]:
        return [
            n
            for n in self.mesh.names(ServiceKind.AGENT)
            if n == f"agent-{domain}" or n.rsplit("-", 1)[0] == f"agent-{domain}"
        ]

    def client(self, name: str, user: str = "chaos-user", tenant: str = TENANT) -> AgentClient:
        key = f"{name}/{tenant}/{user}"
        if key not in self._clients:
            target = self.mesh.planned(name).grpc_target
            assert target is not None
            metadata = bearer(tenant=tenant, user=user)
            self._clients[key] = AgentClient.connect(target, metadata=metadata)
        return self._clients[key]

    async def submit(
        self,
        domain: str,
        instruction: str,
        request_id: str,
        *,
        user: str = "chaos-user",
        tenant: str = TENANT,
        timeout: float = 60,
    ) -> str:
        """SubmitTask on the domain's replicas in turn, through kills (UNAVAILABLE: the next replica)
        and admission limits (RESOURCE_EXHAUSTED: wait its RetryInfo); the task id."""
        deadline = time.monotonic() + timeout
        names = self.replicas(domain)
        while True:
            self._submitted += 1
            name = names[self._submitted % len(names)]
            try:
                task = await self.client(name, user, tenant).submit(
                    instruction, request_id=request_id, timeout=10
                )
                return task.task_id
            except (Unavailable, ResourceExhausted, AgentmeshError) as exc:
                retryable = isinstance(exc, Unavailable | ResourceExhausted) or exc.code in (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.UNAVAILABLE,
                )
                if not retryable or time.monotonic() > deadline:
                    raise
                self.submit_retries += 1
                await asyncio.sleep(exc.retry_after or 0.05)

    async def snapshot(self, domain: str, task_id: str, *, steps: bool = False) -> task_pb2.Task | None:
        found = await self.queue(domain).store.snapshot(task_id, steps=steps)
        return None if found is None else found.task

    async def tasks(self, domain: str, ids: Iterable[str]) -> dict[str, task_pb2.Task]:
        """The full records (steps included); a missing task is an assertion error: it was lost."""
        found = {}
        for task_id in ids:
            task = await self.snapshot(domain, task_id, steps=True)
            assert task is not None, f"task {task_id} of {domain} is lost: no record"
            found[task_id] = task
        return found

    async def wait_settled(
        self, domain: str, ids: Sequence[str], timeout: float = 120, *, during: Any = None
    ) -> dict[str, task_pb2.Task]:
        """Until every task is settled (terminal or outcome unknown); names the stuck ones otherwise.

        `during`: an async callable run between polls (e.g. a kill loop step)."""
        deadline = time.monotonic() + timeout
        left = list(ids)
        while left:
            still = []
            for task_id in left:
                try:
                    task = await self.snapshot(domain, task_id)
                except AgentmeshError:  # Redis restarting: poll again
                    still.append(task_id)
                    continue
                if task is None or not settled(task):
                    still.append(task_id)
            left = still
            if not left:
                break
            if time.monotonic() > deadline:
                states = {}
                for task_id in left[:10]:
                    task = await self.snapshot(domain, task_id)
                    states[task_id] = "absent" if task is None else task_pb2.TaskState.Name(task.state)
                raise AssertionError(f"{len(left)} {domain} task(s) stuck after {timeout:.0f}s: {states}")
            if during is not None:
                await during()
            await asyncio.sleep(0.1)
        return await self.tasks(domain, ids)

    async def stats(self, domain: str) -> QueueStats:
        return await self.queue(domain).stats()

    async def holders(self, domain: str) -> dict[str, str]:
        """task id -> the agent process (name) whose worker holds its queue entry right now."""
        pids = {self.mesh.process(n).pid: n for n in self.replicas(domain)}
        held: dict[str, str] = {}
        redis = self.store_redis
        for shard in range(self.shards):
            stream = keys.queue(domain, shard)
            try:
                pending: Any = await redis.xpending_range(stream, domain, min="-", max="+", count=1000)
            except Exception:  # no stream or group yet
                continue
            for item in pending:
                consumer = _text(item["consumer"])
                pid = int(consumer.rsplit("-", 2)[1])
                entry_id = _text(item["message_id"])
                entries: Any = await redis.xrange(stream, entry_id, entry_id)
                if entries and pid in pids:
                    held[_text(entries[0][1].get(b"t", b""))] = pids[pid]
        return held

    async def _idempotency_records(self, tool: str, task_id: str = "*") -> AsyncIterator[tuple[str, str]]:
        """(task id, state) of the tool SDK's idempotency records of `tool` (any version)."""
        # keys.idempotency(scope, key): scope `tool:<name>:<version>`, key `<task id>:<step>`.
        prefix = "am:{i:" + keys.part(f"tool:{tool}:")
        async for key in self.store_redis.scan_iter(match=f"{prefix}*:{task_id}%3A*", count=1000):
            owner = _text(key).removeprefix(prefix).split(":", 1)[1].split("%3A", 1)[0]
            yield owner, _text(await self.store_redis.hget(key, "state") or b"")

    async def calls_in_flight(self, tool: str) -> list[str]:
        """Task ids with a call to `tool` claimed under its idempotency key and not yet answered
        (the tool-side hook for "after the call was sent, before its checkpoint")."""
        return [task_id async for task_id, state in self._idempotency_records(tool) if state == "pending"]

    async def idempotency_state(self, tool: str, task_id: str) -> str:
        """`pending` (the call runs), `done` (its result is stored) or "" (no call yet)."""
        async for _, state in self._idempotency_records(tool, task_id):
            return state
        return ""

    # -- processes -----------------------------------------------------------------------------

    def kill(self, name: str, *, task_id: str = "", window: str = "", attempt: int = 0) -> Kill:
        """SIGKILL one service (waited for) and remember when."""
        self.mesh.kill(name, signal.SIGKILL)
        kill = Kill(name=name, at=time.monotonic(), task_id=task_id, window=window, attempt=attempt)
        self.kills.append(kill)
        return kill

    async def restart(self, name: str) -> None:
        await self.mesh.restart(name)

    def rss(self) -> dict[str, int]:
        """Resident set size (bytes) of every process of the mesh, Redis included."""
        sizes = {}
        pids = {n: self.mesh.process(n).pid for n in self.mesh.names()}
        if self.redis is not None:
            pids["redis"] = self.redis.pid
        for name, pid in pids.items():
            if pid is not None:
                with contextlib.suppress(OSError, ValueError):
                    sizes[name] = rss_bytes(pid)
        return sizes

    async def redis_memory(self) -> int:
        info: Any = await self.store_redis.info("memory")
        return int(info["used_memory"])

    # -- ledgers -------------------------------------------------------------------------------

    def tool_process(self, tool: str) -> str:
        return f"tool-{tool}"

    async def ledger(self, method: str, arguments: Mapping[str, Any], *, process: str = "") -> Any:
        """A read-only tool's answer, straight from the tool's own port (no registry, no proxy)."""
        tool, rpc = LEDGER_METHODS[method]
        port = self.tool_ports[process or self.tool_process(tool)]
        endpoint = f"127.0.0.1:{port}"
        resolved = self._ledger_tools.get((method, endpoint))
        if resolved is None:  # compiling the .proto takes a while: once per tool and endpoint
            if endpoint not in self._channels:
                self._channels[endpoint] = create_channel(endpoint)
            app = load(tool)
            schema = app.methods[rpc].schema
            spec = prepare(
                tool_pb2.ToolSpec(
                    file_descriptor_set=app.file_set_bytes, method=schema.method_name, endpoint=endpoint
                )
            ).spec
            resolved = self._ledger_tools[(method, endpoint)] = ResolvedTool(
                spec, schema, self._channels[endpoint]
            )
        context = CallContext(
            deadline=time.time() + 10, mint=tool_minter(user="chaos-operator", tenant=TENANT)
        )
        result = await self._invoker.invoke(resolved, dict(arguments), context)
        assert result.ok and result.response is not None, f"{method} on {endpoint}: {result}"
        return result.response

    async def dummy_stats(self, process: str = "") -> dict[str, Any]:
        stats: dict[str, Any] = await self.ledger("dummy_stats", {}, process=process)
        # JSON leaves zero counts out; int64 arrives as text.
        for name in ("calls", "effects", "injected_failures"):
            stats[name] = int(stats.get(name, 0))
        stats["effects_by_action"] = {k: int(v) for k, v in stats.get("effects_by_action", {}).items()}
        return stats

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        for channel in self._channels.values():
            await channel.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()


def rss_bytes(pid: int) -> int:
    """VmRSS of a live process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _with_env(service: PlannedService, env: Mapping[str, str]) -> PlannedService:
    return dataclasses.replace(service, env={**service.env, **env})


@contextlib.asynccontextmanager
async def chaos_mesh(
    state_dir: Path,
    *,
    agents: Mapping[str, int],
    tools: Sequence[str],
    redis: EmbeddedRedis | None = None,
    redis_url: str | None = None,
    proxied: Iterable[str] = (),
    tool_env: Mapping[str, Mapping[str, str]] | None = None,
    tool_replicas: Mapping[str, int] | None = None,
    env: Mapping[str, str] | None = None,
    shards: int = 4,
) -> AsyncIterator[ChaosMesh]:
    """The mesh as real processes: `agents` maps domain → replicas (specs from agents/domains/),
    `proxied` names the links behind a FaultProxy: `tool-<name>`, `registry`, `redis`.

    `tool_replicas` runs more processes of one example tool (`tool-dummy-2`, ...): they share the
    idempotency store, and the proxy in front of the tool (if any) can be pointed at either.
    """
    proxied = set(proxied)
    proxies: dict[str, FaultProxy] = {}
    if redis_url is None:
        redis = redis or EmbeddedRedis(appendonly=True, appendfsync="everysec", data_dir=state_dir / "valkey")
        if redis.port == 0:
            redis.port = free_port_with_partner(HTTP_PORT_OFFSET)
            await _start_redis(redis)
        redis_url = redis.url
    if redis is None:  # a Redis of the test's own (Sentinel, Cluster): used as it is
        assert "redis" not in proxied, "a proxy sits in front of one plain server only"
        service_redis_url = redis_url
    elif "redis" in proxied:
        proxies["redis"] = FaultProxy(redis.host, redis.port, name="proxy-redis").start()
        auth = f":{redis.password}@" if redis.password else ""
        service_redis_url = f"redis://{auth}{proxies['redis'].address}/0"
    else:
        service_redis_url = redis_url
    names = ["registry", "model", *(f"tool-{t}" for t in tools)]
    for domain, count in agents.items():
        names += [f"agent-{domain}"] if count == 1 else [f"agent-{domain}-{n + 1}" for n in range(count)]
    base_env = {**CHAOS_ENV, "AGENTMESH_QUEUE_SHARDS": str(shards), **(env or {})}
    chaos: ChaosMesh | None = None
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            chaos = _planned_mesh(
                state_dir / f"start-{attempt}" if attempt > 1 else state_dir,
                names=names,
                agents=agents,
                tools=tools,
                redis=redis,
                redis_url=redis_url,
                service_redis_url=service_redis_url,
                proxied=proxied,
                proxies=dict(proxies),
                tool_env=tool_env or {},
                tool_replicas=tool_replicas or {},
                env=base_env,
                shards=shards,
            )
            try:
                await chaos.mesh.start()
            except MeshStartError as exc:
                # A port picked for a child was taken before the child bound it (by another
                # process on this shared machine): new ports, a bounded number of times.
                await _drop(chaos, keep=proxies)
                if attempt == START_ATTEMPTS or not _port_taken(str(exc)):
                    raise
                print(f"chaos mesh: a port was taken before its service bound it; new ports ({exc})")
                continue
            break
        assert chaos is not None
        registry = chaos.mesh.planned("registry").grpc_target
        assert registry is not None
        await wait_registered(
            registry, tools=[TOOL_REGISTERED[t] for t in tools], agents=list(agents), timeout=90
        )
        yield chaos
    finally:
        if chaos is not None:
            await _drop(chaos, keep={})
        for proxy in proxies.values():
            proxy.stop()
        if redis is not None:
            redis.cleanup()


# How often chaos_mesh picks new ports when a service could not bind the one it was given.
START_ATTEMPTS = 3


async def _start_redis(redis: EmbeddedRedis) -> None:
    """Start valkey on the port the harness picked; a new port when someone took that one first."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            await asyncio.to_thread(redis.start)
            return
        except RuntimeError as exc:
            if attempt == START_ATTEMPTS or port_bindable(redis.host, redis.port):
                raise
            print(f"chaos mesh: a port was taken before valkey bound it; new port ({exc})")
            redis.port = free_port_with_partner(HTTP_PORT_OFFSET)


_BIND_FAILURES = ("address already in use", "could not bind", "errno 98", "failed to bind")


def _port_taken(message: str) -> bool:
    return any(marker in message.lower() for marker in _BIND_FAILURES)


async def _drop(chaos: ChaosMesh, *, keep: Mapping[str, FaultProxy]) -> None:
    """Stop the mesh's processes and the proxies made for this plan (not those in `keep`)."""
    await chaos.close()
    await chaos.mesh.stop()
    for name, proxy in chaos.proxies.items():
        if name not in keep:
            proxy.stop()


def _planned_mesh(
    state_dir: Path,
    *,
    names: Sequence[str],
    agents: Mapping[str, int],
    tools: Sequence[str],
    redis: EmbeddedRedis | None,
    redis_url: str,
    service_redis_url: str,
    proxied: set[str],
    proxies: dict[str, FaultProxy],
    tool_env: Mapping[str, Mapping[str, str]],
    tool_replicas: Mapping[str, int],
    env: Mapping[str, str],
    shards: int,
) -> ChaosMesh:
    """The plan on freshly picked ports, its proxies started, its processes not yet."""
    ports = {name: free_port_with_partner(HTTP_PORT_OFFSET) for name in names}
    options = MeshOptions(
        redis_url=service_redis_url,
        agents=[(domain, DOMAINS_DIR / f"{domain}.yaml") for domain in agents],
        tools=tuple(tools),
        console=False,
        replicas=dict(agents),
        ports=ports,
        extra_env=env,
        # Auth on, as `agentmesh up` runs it: the session's test issuer signs every service token.
        signing_key=key_path(),
        jwks=jwks_path(),
    )
    options = dataclasses.replace(
        options,
        service_tokens={
            name: issuer().service_token(name, scopes=SERVICE_SCOPES) for name in service_names(options)
        },
    )
    if "registry" in proxied:
        proxies["registry"] = FaultProxy("127.0.0.1", ports["registry"], name="proxy-registry").start()
    plan: list[PlannedService] = []
    tool_ports: dict[str, int] = {}
    for service in build_plan(options):
        if service.kind is ServiceKind.AGENT and "registry" in proxies:
            service = _with_env(service, {"AGENTMESH_REGISTRY": proxies["registry"].address})
        if service.kind is ServiceKind.TOOL:
            tool = service.name.removeprefix("tool-")
            service = _with_env(service, tool_env.get(tool, {}))
            assert service.grpc_port is not None
            tool_ports[service.name] = service.grpc_port
            if service.name in proxied:
                proxy = FaultProxy("127.0.0.1", service.grpc_port, name=f"proxy-{service.name}").start()
                proxies[service.name] = proxy
                service = _with_env(service, {"AGENTMESH_ADVERTISE_ADDR": proxy.address})
            for n in range(2, tool_replicas.get(tool, 1) + 1):
                port = free_port_with_partner(HTTP_PORT_OFFSET)
                replica = dataclasses.replace(
                    service,
                    name=f"{service.name}-{n}",
                    grpc_port=port,
                    http_port=port + HTTP_PORT_OFFSET,
                    env={**service.env, "AGENTMESH_GRPC_PORT": str(port)},
                )
                tool_ports[replica.name] = port
                plan.append(replica)
        plan.append(service)
    mesh = LocalMesh(plan, state_dir, redis=redis, redis_url=redis_url, report=lambda _: None, cwd=_root())
    return ChaosMesh(
        mesh=mesh, redis=redis, redis_url=redis_url, proxies=proxies, tool_ports=tool_ports, shards=shards
    )


def _root() -> Path:
    return Path(__file__).resolve().parents[2]


def log_tails(mesh: ChaosMesh, names: Iterable[str], lines: int = 15) -> str:
    return "\n".join(f"--- {n}\n{mesh.mesh.process(n).log_tail(lines)}" for n in names)


def cpu_count() -> int:
    return os.cpu_count() or 1

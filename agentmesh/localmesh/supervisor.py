"""Runs the local mesh: child processes started by tier, waited on by health, restarted on crash.

State (pids, ports, log files) is written to `<state_dir>/mesh.json` so
`agentmesh status` in another shell can report on the running mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from agentmesh.kit import health
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.plan import PlannedService, ServiceKind
from agentmesh.localmesh.proc import ServiceProcess

log = logging.getLogger(__name__)

STATE_FILE = "mesh.json"
START_TIMEOUT_S = 60.0
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0

Reporter = Callable[[str], None]


class MeshStartError(RuntimeError):
    pass


@dataclass
class _Running:
    planned: PlannedService
    process: ServiceProcess
    restarts: list[float] = field(default_factory=list)


async def http_serving(target: str, path: str = "/healthz", timeout: float = 1.0) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as client,
            client.get(f"http://{target}{path}") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def service_health(planned: PlannedService, timeout: float = 1.0) -> str:
    if planned.grpc_target is not None:
        return await health.check(planned.grpc_target, planned.health_service, timeout)
    if planned.http_target is not None:
        return health.SERVING if await http_serving(planned.http_target, timeout=timeout) else health.UNKNOWN
    return health.UNKNOWN


class LocalMesh:
    def __init__(
        self,
        plan: Sequence[PlannedService],
        state_dir: Path,
        *,
        redis: EmbeddedRedis | None,
        redis_url: str,
        report: Reporter = print,
        cwd: Path | None = None,
    ) -> None:
        self.plan = list(plan)
        self.state_dir = state_dir
        self.redis = redis
        self.redis_url = redis_url
        self.report = report
        self.cwd = cwd
        self._running: dict[str, _Running] = {}
        self._stopping = False

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def _process(self, planned: PlannedService) -> ServiceProcess:
        return ServiceProcess(
            name=planned.name,
            argv=list(planned.argv),
            grpc_port=planned.grpc_port,
            env=dict(planned.env),
            log_path=self.log_dir / f"{planned.name}.log",
            health_service=planned.health_service,
            cwd=self.cwd,
        )

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.redis is not None:
            self.report(f"redis      starting embedded valkey on {self.redis.host}:{self.redis.port}")
            await asyncio.to_thread(self.redis.start)
        for tier in sorted({p.tier for p in self.plan}):
            group = [p for p in self.plan if p.tier == tier]
            for planned in group:
                self._running[planned.name] = _Running(planned, self._process(planned).start())
            try:
                await asyncio.gather(*(self._wait_serving(self._running[p.name]) for p in group))
            except Exception:
                await self.stop()
                raise
        self.write_state()

    async def _wait_serving(self, running: _Running) -> None:
        planned = running.planned
        started = time.monotonic()
        deadline = started + START_TIMEOUT_S
        while True:
            if not running.process.running():
                raise MeshStartError(
                    f"{planned.name} exited with code {running.process.returncode} while starting; "
                    f"log: {running.process.log_path}\n{running.process.log_tail(20)}"
                )
            if await service_health(planned, timeout=0.5) == health.SERVING:
                where = planned.url or planned.grpc_target or planned.http_target
                self.report(f"{planned.name:<22} SERVING on {where}  ({time.monotonic() - started:.1f}s)")
                return
            if time.monotonic() > deadline:
                log_path, tail = running.process.log_path, running.process.log_tail(20)
                raise MeshStartError(
                    f"{planned.name} not SERVING after {START_TIMEOUT_S:.0f}s; log: {log_path}\n{tail}"
                )
            await asyncio.sleep(0.1)

    def state(self) -> dict[str, Any]:
        insecure = any(p.env.get("AGENTMESH_INSECURE_NO_AUTH") == "true" for p in self.plan)
        return {
            "redis": self.redis_url,
            "auth": "off" if insecure else "on",
            "redis_pid": self.redis.pid if self.redis else None,
            "supervisor_pid": os.getpid(),
            "services": [
                {
                    "name": r.planned.name,
                    "kind": r.planned.kind.value,
                    "grpc": r.planned.grpc_target,
                    "http": r.planned.http_target,
                    "pid": r.process.pid,
                    "health_service": r.planned.health_service,
                    "log": str(r.process.log_path),
                }
                for r in self._running.values()
            ],
        }

    def write_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2))
        tmp.replace(self.state_file)

    def names(self, kind: ServiceKind | None = None) -> list[str]:
        """The running services' names (of one kind), in start order."""
        return [n for n, r in self._running.items() if kind is None or r.planned.kind is kind]

    def _get(self, name: str) -> _Running:
        running = self._running.get(name)
        if running is None:
            raise KeyError(f"no service {name!r} in this mesh (services: {', '.join(self._running)})")
        return running

    def process(self, name: str) -> ServiceProcess:
        """The child process serving `name` (KeyError naming the known services otherwise)."""
        return self._get(name).process

    def planned(self, name: str) -> PlannedService:
        return self._get(name).planned

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int | None:
        """Send `sig` to one service and wait for it to exit; its exit code (-9 after SIGKILL).

        `supervise` restarts it like any crash; without it, `restart` brings it back.
        """
        process = self.process(name)
        process.signal(sig)
        return process.wait(timeout) if process.pid is not None else None

    async def restart(self, name: str) -> ServiceProcess:
        """Start `name` again (SIGKILLed first if it still runs) and wait until it is SERVING."""
        running = self._get(name)
        if running.process.running():
            await asyncio.to_thread(running.process.kill)
        running.process = self._process(running.planned).start()
        await self._wait_serving(running)
        self.write_state()
        return running.process

    async def supervise(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: restart crashed services (at most MAX_RESTARTS a minute each)."""
        while not stop.is_set():
            for running in list(self._running.values()):
                if running.process.running() or self._stopping:
                    continue
                now = time.monotonic()
                running.restarts = [t for t in running.restarts if now - t < RESTART_WINDOW_S]
                name = running.planned.name
                if len(running.restarts) >= MAX_RESTARTS:
                    self.report(f"{name} keeps crashing; not restarting (log: {running.process.log_path})")
                    del self._running[name]
                    self.write_state()
                    continue
                self.report(f"{name} exited with code {running.process.returncode}; restarting")
                running.restarts.append(now)
                running.process = self._process(running.planned).start()
                with contextlib.suppress(MeshStartError):
                    await self._wait_serving(running)
                self.write_state()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)

    async def stop(self) -> None:
        """SIGTERM in reverse start order (agents first, registry last), then Redis."""
        self._stopping = True
        for tier in sorted({r.planned.tier for r in self._running.values()}, reverse=True):
            group = [r for r in self._running.values() if r.planned.tier == tier]
            await asyncio.gather(*(asyncio.to_thread(r.process.stop, 15.0) for r in group))
        self._running.clear()
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()


async def collect_status(state: dict[str, Any]) -> dict[str, Any]:
    """The `agentmesh status --json` document for the mesh described by `state` (mesh.json)."""
    services: list[dict[str, Any]] = []
    redis_status = await _redis_health(state["redis"])
    services.append(
        {
            "name": "redis",
            "kind": ServiceKind.REDIS.value,
            "grpc": None,
            "http": None,
            "pid": state.get("redis_pid"),
            "health": redis_status,
        }
    )

    async def one(entry: dict[str, Any]) -> dict[str, Any]:
        planned = PlannedService(
            name=entry["name"],
            kind=ServiceKind(entry["kind"]),
            argv=(),
            env={},
            grpc_port=int(entry["grpc"].rsplit(":", 1)[1]) if entry["grpc"] else None,
            http_port=int(entry["http"].rsplit(":", 1)[1]) if entry["http"] else None,
            health_service=entry.get("health_service", ""),
        )
        status = await service_health(planned)
        return {k: entry[k] for k in ("name", "kind", "grpc", "http", "pid")} | {"health": status}

    services += await asyncio.gather(*(one(e) for e in state["services"]))
    return {"redis": state["redis"], "auth": state.get("auth", "on"), "services": services}


async def _redis_health(url: str) -> str:
    from memory.connection import create_redis

    client = create_redis(url)
    try:
        return health.SERVING if await asyncio.wait_for(client.ping(), 1.0) else health.NOT_SERVING
    except Exception:
        return health.UNKNOWN
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()

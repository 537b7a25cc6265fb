"""Fixtures for the memory layer: the same tests against one server and a real 3-node cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_sync

from agentmesh.embedded_redis import EmbeddedCluster, start_cluster
from memory.connection import AnyRedis, create_redis
from memory.task_queue import TaskQueue
from memory.tasks import TaskConfig

# Short timeouts so recovery paths run in test time; never assert on timing with them.
FAST = TaskConfig(shards=2, claim_idle_timeout_s=1.0, read_block_s=0.2, max_attempts=2)


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
async def client(backend_url: str) -> AsyncIterator[AnyRedis]:
    redis = create_redis(backend_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def queue(client: AnyRedis) -> TaskQueue:
    queue = TaskQueue(client, domain="refunds", config=FAST)
    await queue.ensure_groups()
    return queue


@pytest.fixture
async def single_queue(redis_url: str) -> AsyncIterator[TaskQueue]:
    """A queue on the single server only (for tests that look at raw keys or stop the server)."""
    redis = create_redis(redis_url)
    queue = TaskQueue(redis, domain="refunds", config=FAST)
    await queue.ensure_groups()
    yield queue
    await redis.aclose()

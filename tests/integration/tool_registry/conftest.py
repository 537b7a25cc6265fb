"""Fixtures: a real registry on the test Redis, and on a real 3-node cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_sync

from agentmesh.embedded_redis import EmbeddedCluster, start_cluster
from tests.support.registry import Registry, registry_at


@pytest.fixture(scope="session")
def registry_cluster() -> Iterator[EmbeddedCluster]:
    with start_cluster(3) as cluster:
        yield cluster


@pytest.fixture(params=["single", "cluster"])
def registry_redis_url(request: pytest.FixtureRequest) -> str:
    """The session server, or the session's 3-node cluster with every node flushed."""
    if request.param == "single":
        url: str = request.getfixturevalue("redis_url")
        return url
    cluster: EmbeddedCluster = request.getfixturevalue("registry_cluster")
    for node in cluster.nodes:
        client = redis_sync.Redis(host=node.host, port=node.port)
        try:
            client.flushall()
        finally:
            client.close()
    return cluster.url


@pytest.fixture
async def registry(registry_redis_url: str) -> AsyncIterator[Registry]:
    async with registry_at(registry_redis_url) as reg:
        yield reg

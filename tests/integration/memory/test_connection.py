from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from agentmesh.errors import DataLoss, Unavailable
from agentmesh.net import free_port
from memory import connection
from memory.connection import create_redis, describe, redis_errors

pytestmark = pytest.mark.integration


async def test_plain_url_connects(redis_url: str) -> None:
    client = create_redis(redis_url)
    assert await client.ping()
    await client.aclose()


async def test_cluster_url_connects() -> None:
    from agentmesh.embedded_redis import start_cluster

    with start_cluster(3) as cluster:
        client = create_redis(cluster.url)
        await client.set("{t:1}:a", "x")
        assert await client.get("{t:1}:a") == b"x"
        await client.aclose()


async def test_unreachable_redis_becomes_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "RETRIES", 2)
    client = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(Unavailable) as caught, redis_errors("reading task t-1"):
        await client.get("am:x")
    assert "reading task t-1" in caught.value.message
    assert caught.value.retry_after == 1.0
    await client.aclose()


async def test_foreign_type_under_our_key_is_data_loss(redis_client: aioredis.Redis) -> None:
    await redis_client.rpush("am:{t:1}:task", "not a hash")
    with pytest.raises(DataLoss, match="foreign data"), redis_errors("reading task 1"):
        await redis_client.hget("am:{t:1}:task", "record")


def test_describe_hides_credentials() -> None:
    assert describe("redis://user:secret@host:6379/0") == "redis://host:6379/0"


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported REDIS_URL scheme 'http'"):
        create_redis("http://localhost")


def test_sentinel_needs_service_name() -> None:
    with pytest.raises(ValueError, match="service name"):
        create_redis("redis+sentinel://localhost:26379")

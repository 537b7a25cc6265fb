from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from agentmesh.kit.errors import DataLoss, Unavailable
from agentmesh.kit.net import free_port
from agentmesh.v1.agent_service_pb2 import SubmitTaskRequest
from agents.requests import new_task
from memory import connection
from memory.connection import create_redis, describe, redis_errors
from memory.tasks.queue import TaskQueue
from memory.tasks.store import TaskConfig

pytestmark = pytest.mark.integration


async def test_plain_url_connects(redis_url: str) -> None:
    client = create_redis(redis_url)
    assert await client.ping()
    await client.aclose()


async def test_cluster_url_connects() -> None:
    from agentmesh.localmesh.embedded_redis import start_cluster

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


async def test_sentinel_url_finds_the_master_with_both_passwords() -> None:
    from agentmesh.localmesh.embedded_redis import EmbeddedRedis, EmbeddedSentinel

    with (
        EmbeddedRedis(password="master-secret") as master,
        EmbeddedSentinel(master, password="sentinel-secret") as sentinel,
    ):
        client = create_redis(sentinel.url(db=0))
        await client.set("am:sentinel", "x")
        assert await client.get("am:sentinel") == b"x"
        # The scripts of the task layer run through it like through a plain URL.
        queue = TaskQueue(client, domain="refunds", config=TaskConfig(shards=1))
        await queue.ensure_groups()
        task = await queue.submit(
            new_task(SubmitTaskRequest(instruction="hi", request_id="r-1")), tenant="t", owner="u"
        )
        attempt = await queue.claim("w", 0)
        assert attempt is not None and attempt.task.task_id == task.task_id
        await client.aclose()

        # Without the Sentinels' password the master is never found: UNAVAILABLE saying so.
        no_password = create_redis(sentinel.url(db=0).split("?")[0])
        missing = pytest.raises(Unavailable, match="no Sentinel named the Redis master")
        with missing, redis_errors("reading task t-1"):
            await no_password.get("am:sentinel")
        await no_password.aclose()


async def test_refused_credentials_fail_at_once_and_say_so() -> None:
    from agentmesh.localmesh.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(password="right") as server:
        admin = create_redis(server.url)
        before = await _denied_logins(admin)
        client = create_redis(server.url.replace(":right@", ":wrong@"))
        with pytest.raises(Unavailable, match="refused our credentials"), redis_errors("reading task t-1"):
            await client.get("am:x")
        # Not retried like a lost connection: a password does not heal with time. Counted by the
        # server (one refused login), not timed, so a loaded machine cannot make it flaky.
        assert await _denied_logins(admin) - before == 1
        await client.aclose()
        await admin.aclose()


async def _denied_logins(client: aioredis.Redis) -> int:
    return int((await client.info("stats"))["acl_access_denied_auth"])


def test_tls_schemes_and_sentinel_password_stay_out_of_descriptions() -> None:
    url = "rediss+sentinel://:m@h1:26379,h2:26379/mymaster/0?sentinel_password=s&ssl_cert_reqs=none"
    assert describe(url) == "rediss+sentinel://h1:26379,h2:26379/mymaster/0?ssl_cert_reqs=none"
    cluster = create_redis("rediss+cluster://:p@h1:6379?ssl_ca_certs=/etc/ca.pem")
    node_kwargs = cluster.connection_kwargs  # type: ignore[union-attr]
    assert issubclass(node_kwargs["connection_class"], aioredis.SSLConnection)
    assert node_kwargs["ssl_ca_certs"] == "/etc/ca.pem"

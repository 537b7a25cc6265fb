"""REDIS_URL parsing without the Redis client: checking a URL at start, describing it in logs.

`memory.connection` builds clients from what this module parses; a process that creates its
client only at first use (the tool SDK's idempotency store) checks the URL here at start, so a
bad REDIS_URL still stops it at once, without loading redis-py (~8 MB) before it is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

PLAIN_SCHEMES = frozenset({"redis", "rediss", "unix"})
CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})


@dataclass(frozen=True)
class RedisUrl:
    """The parts of a REDIS_URL the client factory needs."""

    url: str
    scheme: str
    netloc: str
    path: str
    query: dict[str, list[str]]

    def hosts(self, default_port: int) -> list[tuple[str, int]]:
        return hosts(self.netloc, default_port)

    def credentials(self) -> dict[str, Any]:
        return credentials(self.netloc)

    def sentinel_service(self) -> tuple[str, int]:
        """(service, db) of a Sentinel URL."""
        path = [p for p in self.path.split("/") if p]
        if not path:
            raise ValueError(
                "redis+sentinel:// URLs need the service name: redis+sentinel://host:26379/mymaster/0"
            )
        return path[0], int(path[1]) if len(path) > 1 else 0


def parse_redis_url(url: str) -> RedisUrl:
    """Parse and check `url` (ValueError naming the problem): scheme, ports, Sentinel service and db."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme not in PLAIN_SCHEMES | CLUSTER_SCHEMES | SENTINEL_SCHEMES:
        raise ValueError(
            f"unsupported REDIS_URL scheme {scheme!r}: use redis://, rediss://, unix://, "
            "redis+sentinel://, redis+cluster:// (or rediss+sentinel://, rediss+cluster:// for TLS)"
        )
    result = RedisUrl(url, scheme, parsed.netloc, parsed.path, parse_qs(parsed.query))
    try:
        if scheme in CLUSTER_SCHEMES:
            result.hosts(6379)
        elif scheme in SENTINEL_SCHEMES:
            result.hosts(26379)
            result.sentinel_service()
        elif scheme != "unix":
            _ = parsed.port  # ValueError on a port that is not a number or out of range
            db = parsed.path.strip("/")
            if db:
                int(db)
    except ValueError as exc:
        raise ValueError(f"invalid REDIS_URL {describe(url)!r}: {exc}") from None
    return result


def hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    found = []
    for item in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        found.append((host or "localhost", int(port) if port else default_port))
    return found


def credentials(netloc: str) -> dict[str, Any]:
    if "@" not in netloc:
        return {}
    userinfo = netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    creds: dict[str, Any] = {}
    if user:
        creds["username"] = unquote(user)
    if password:
        creds["password"] = unquote(password)
    return creds


def describe(url: str) -> str:
    """The URL without credentials, for logs and status output."""
    parsed = urlparse(url)
    netloc = parsed.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        part for part in parsed.query.split("&") if part and not part.startswith("sentinel_password=")
    )
    return parsed._replace(netloc=netloc, query=query).geturl()

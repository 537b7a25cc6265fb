"""Small network helpers."""

from __future__ import annotations

import random
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for child processes that need a number up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(host: str, port: int, *, reuse_address: bool = True) -> bool:
    """Whether a server could bind `port` now: nothing listens on it and no socket holds it.

    Connecting is not enough: an outgoing connection's local end may sit on the
    port (the kernel's ephemeral range is wide) and still make bind fail.
    With `reuse_address` (SO_REUSEADDR, as gRPC and aiohttp set it) TIME_WAIT
    leftovers do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port_with_partner(offset: int, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A free port p such that p + offset is free too (Valkey Cluster's bus port is p + 10000)."""
    for _ in range(attempts):
        candidate = random.randint(20_000, 65_535 - offset)
        if all(port_bindable(host, p, reuse_address=False) for p in (candidate, candidate + offset)):
            return candidate
    raise OSError(f"no free port pair with offset {offset} found")

"""Small network helpers."""

from __future__ import annotations

import functools
import random
import socket
import threading
from pathlib import Path

# Where ports handed to child processes come from: above the well-known and registered-service
# crowd, below 65535, and outside the kernel's ephemeral range (see `ephemeral_range`).
PICK_LOW = 15_000
PICK_HIGH = 65_535
_EPHEMERAL_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_EPHEMERAL_DEFAULT = (32_768, 60_999)  # Linux's default
# Every port this process handed out (and its partner): never handed out twice, so two services
# a test plans one after the other can never be given the same number before either binds it.
_handed_out: set[int] = set()
_lock = threading.Lock()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local end of outgoing connections and `bind(port 0)`.

    A port picked inside it can be taken by any connection (or port-0 listener) on the machine
    in the moment between the pick and the child's bind: picked ports stay outside it.
    """
    try:
        low, high = (int(n) for n in _EPHEMERAL_FILE.read_text().split())
    except (OSError, ValueError):
        return _EPHEMERAL_DEFAULT
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now, for a child process that needs a number up front.

    Outside the ephemeral range and never handed out before by this process, so only another
    process picking at random the same way can race for it.
    """
    return _pick(host, 0)


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
    """A free port p such that p + offset is free too (a service's HTTP side listener is p + 1000,
    Valkey Cluster's bus port p + 10000); both outside the ephemeral range, never handed out before."""
    return _pick(host, offset, attempts)


def _pickable(port: int, ephemeral: tuple[int, int]) -> bool:
    return PICK_LOW <= port <= PICK_HIGH and not ephemeral[0] <= port <= ephemeral[1]


@functools.lru_cache(maxsize=16)
def _candidates(offset: int, ephemeral: tuple[int, int]) -> tuple[int, ...]:
    found = tuple(
        p
        for p in range(PICK_LOW, PICK_HIGH - offset + 1)
        if _pickable(p, ephemeral) and _pickable(p + offset, ephemeral)
    )
    # An ephemeral range covering everything: nothing better than port 0's luck.
    return found or tuple(range(PICK_LOW, PICK_HIGH - offset + 1))


def _pick(host: str, offset: int, attempts: int = 200) -> int:
    ephemeral = ephemeral_range()
    candidates = _candidates(offset, ephemeral)
    with _lock:
        for _ in range(attempts):
            candidate = random.choice(candidates)
            pair = {candidate, candidate + offset}
            if pair & _handed_out:
                continue
            if all(port_bindable(host, p, reuse_address=False) for p in pair):
                _handed_out.update(pair)
                return candidate
    raise OSError(f"no free port (with partner + {offset}) outside the ephemeral range {ephemeral}")

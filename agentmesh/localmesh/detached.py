"""A local mesh in the background: `agentmesh up --detach` and `agentmesh down`.

`up --detach` runs the ordinary foreground `agentmesh up` as a child in its own session (its
output in `<state>/logs/up.log`) and returns once that child has written `mesh.json` and every
service in it answers SERVING. `down` sends SIGTERM to the supervisor named in `mesh.json`,
which stops its services in reverse order and then Redis (as Ctrl-C does), and then makes sure
that no process `mesh.json` names is left: one still alive (a supervisor that was SIGKILLed
leaves its children) gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmesh.kit import health
from agentmesh.localmesh.supervisor import STATE_FILE, collect_status

UP_LOG = "up.log"
# Names a mesh process's command line carries (a pid reused by another program is left alone).
_OUR_COMMANDS = (b"agentmesh", b"valkey")


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ours(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to check: the pid comes from our own mesh.json
    return any(name in cmdline for name in _OUR_COMMANDS)


def mesh_pids(state: dict[str, Any]) -> list[int]:
    """Every process `mesh.json` names: the supervisor, the services, the embedded Redis."""
    pids = [
        state.get("supervisor_pid"),
        *(s.get("pid") for s in state.get("services", ())),
        state.get("redis_pid"),
    ]
    return [int(pid) for pid in pids if pid]


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return document


@dataclass
class Detached:
    """The background `agentmesh up` once its mesh is healthy."""

    pid: int
    state: dict[str, Any]
    status: dict[str, Any]
    log: Path


class DetachError(RuntimeError):
    pass


def spawn_up(argv: Sequence[str], state_dir: Path, *, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` (a foreground `agentmesh up`) in its own session, output in `<state>/logs/up.log`."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / UP_LOG).open("ab") as sink:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )


async def wait_healthy(child: subprocess.Popen[bytes], state_dir: Path, *, timeout: float) -> Detached:
    """Once the background `agentmesh up` has written mesh.json and every service is SERVING.

    Raises DetachError (with the end of its log) when it exits first or is not healthy in time; in
    the latter case it is stopped (SIGTERM: it stops what it started)."""
    log = state_dir / "logs" / UP_LOG
    deadline = time.monotonic() + timeout
    while True:
        if child.poll() is not None:
            raise DetachError(f"`agentmesh up` exited with code {child.returncode}; log: {log}\n{_tail(log)}")
        state = read_state(state_dir)
        if state is not None and state.get("supervisor_pid") == child.pid:
            status = await collect_status(state)
            if all(s["health"] == health.SERVING for s in status["services"]):
                return Detached(pid=child.pid, state=state, status=status, log=log)
        if time.monotonic() > deadline:
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(child.wait, 60)
            raise DetachError(f"the mesh was not healthy after {timeout:.0f}s; log: {log}\n{_tail(log)}")
        await asyncio.sleep(0.25)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if process_alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Stopped:
    pids: list[int]  # every process mesh.json named
    by_supervisor: bool  # the supervisor stopped its services itself
    killed: list[int]  # left over and SIGKILLed


def stop_detached(state_dir: Path, *, grace: float = 60.0, kill_after: float = 15.0) -> Stopped | None:
    """Stop the mesh `state_dir/mesh.json` describes; None when there is none. Nothing it names is
    left running afterwards (SIGKILL for what outlives SIGTERM by `kill_after` seconds)."""
    state = read_state(state_dir)
    if state is None:
        return None
    pids = [pid for pid in mesh_pids(state) if process_alive(pid) and _ours(pid)]
    supervisor = state.get("supervisor_pid")
    by_supervisor = False
    if supervisor and supervisor in pids:
        _signal([supervisor], signal.SIGTERM)  # it stops its services, then Redis, then exits
        by_supervisor = not _wait_gone([supervisor], grace)
    left = _wait_gone(pids, 0 if not by_supervisor else 5.0)
    killed: list[int] = []
    if left:  # the supervisor was gone (or stuck): stop what it left behind ourselves
        _signal(left, signal.SIGTERM)
        killed = _wait_gone(left, kill_after)
        _signal(killed, signal.SIGKILL)
        _wait_gone(killed, 5.0)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
    return Stopped(pids=pids, by_supervisor=by_supervisor, killed=killed)

"""`agentmesh down`'s guarantee with real processes: nothing `mesh.json` names is left running, even
when the supervisor is gone (SIGKILLed) and a service ignores SIGTERM; pids of other programs
are left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.localmesh.detached import process_alive, stop_detached

pytestmark = pytest.mark.integration

# A stand-in service: its command line names agentmesh, as every mesh process's does.
SERVICE = "import signal, sys, time  # agentmesh serve\n{ignore}\nprint('ready', flush=True)\ntime.sleep(120)"


def _start(ignore_term: bool = False, marker: str = "agentmesh") -> subprocess.Popen[bytes]:
    code = SERVICE.format(ignore="signal.signal(signal.SIGTERM, signal.SIG_IGN)" if ignore_term else "")
    code = code.replace("agentmesh", marker)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"  # handlers in place
    return process


def test_process_alive_counts_a_zombie_as_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not process_alive(child.pid)  # exited, not yet reaped
    child.wait()
    assert not process_alive(child.pid)
    assert process_alive(os.getpid())


def test_down_stops_what_a_dead_supervisor_left_behind(tmp_path: Path) -> None:
    polite, stubborn = _start(), _start(ignore_term=True)
    stranger = _start(marker="somebody")  # named in a stale mesh.json by a reused pid
    supervisor = _start()
    supervisor.kill()
    supervisor.wait()
    state = {
        "redis": "redis://127.0.0.1:1/0",
        "redis_pid": None,
        "supervisor_pid": supervisor.pid,
        "services": [{"name": n, "pid": p.pid} for n, p in (("a", polite), ("b", stubborn), ("c", stranger))],
    }
    (tmp_path / "mesh.json").write_text(json.dumps(state))
    try:
        stopped = stop_detached(tmp_path, kill_after=1.0)
        assert stopped is not None and not stopped.by_supervisor
        assert sorted(stopped.pids) == sorted([polite.pid, stubborn.pid])
        assert stopped.killed == [stubborn.pid]  # outlived SIGTERM
        for process in (polite, stubborn):
            process.wait(5)
            assert not process_alive(process.pid)
        assert process_alive(stranger.pid)  # not ours
        assert not (tmp_path / "mesh.json").exists()
        again = CliRunner().invoke(app, ["down", "--state-dir", str(tmp_path)])
        assert again.exit_code == 1 and "no mesh is running" in again.output
    finally:
        for process in (polite, stubborn, stranger):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()

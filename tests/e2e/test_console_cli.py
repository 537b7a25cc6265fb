"""The operator's command line against a real local mesh started with `agentmesh up --detach`:
task commands (submit, list, get, watch and its resumption, approve, reject, cancel), the training
dummy's chaos controls, and `agentmesh down` leaving no process behind. `up --detach` runs as a
real `python -m agentmesh` process; the other commands run in the test's process through typer's
runner (the same code, without a Python start-up each).

The mesh is shifted by `--port-offset` above the kernel's ephemeral port range (and beside the
demo test's mesh), so no outgoing connection of another test can hold one of its ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.kit.net import port_bindable
from agentmesh.localmesh.demo import INJECTED_MESSAGE
from agentmesh.localmesh.detached import mesh_pids, process_alive
from agentmesh.localmesh.plan import DOMAINS_DIR, REGISTRY_PORT, MeshOptions, build_plan, ports_in_use

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AGENTMESH = [sys.executable, "-m", "agentmesh"]
TOOLS = ("crm", "payments", "email", "dummy")
AGENTS = ("refunds", "training")
# Markup a terminal UI must print as text (an unbalanced closing tag makes rich raise).
MARKUP = "[bold red]drill-7[/bold red] [/]"


def _offset() -> int:
    """Above the ephemeral range, 2000 ports beside the demo test's mesh."""
    try:
        _, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        high = 60_999
    return max(0, high + 1 - REGISTRY_PORT) + 2000


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """`agentmesh ARGS`: `up` as a real process (it must outlive the call), everything else in this
    process through typer's runner (the same code, without a Python start-up per command)."""

    def __init__(self, env: dict[str, str], state: Path) -> None:
        self.env = env
        self.state = state

    def __call__(self, *args: str, timeout: float = 120) -> Ran:
        if args[0] == "up":
            done = subprocess.run(
                [*AGENTMESH, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=self.env
            )
            return Ran(done.returncode, done.stdout, done.stderr)
        result = CliRunner().invoke(app, list(args), env=self.env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Ran(result.exit_code, result.stdout, result.stderr)

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    offset = _offset()
    options = MeshOptions(
        redis_url="",
        agents=[(a, DOMAINS_DIR / f"{a}.yaml") for a in AGENTS],
        tools=TOOLS,
        port_offset=offset,
    )
    ports = [*ports_in_use(build_plan(options)), options.redis_port]
    busy = [p for p in ports if not port_bindable("127.0.0.1", p)]
    assert not busy, f"ports {busy} of the test mesh (--port-offset {offset}) are taken; free them"
    tmp = tmp_path_factory.mktemp("console-cli")
    env = {
        **os.environ,
        "AGENTMESH_PROFILE": str(tmp / "profile.toml"),
        "COLUMNS": "250",
        "NO_COLOR": "1",
    }
    env.pop("AGENTMESH_REGISTRY", None)
    # Commands that act as the local mesh's operator (chaos) find its issuer in the state directory.
    env["AGENTMESH_STATE_DIR"] = str(tmp / "state")
    cli = Cli(env, tmp / "state")
    argv = ["up", "--detach", "--state-dir", str(cli.state), "--port-offset", str(offset)]
    for tool in TOOLS:
        argv += ["--tool", tool]
    for agent in AGENTS:
        argv += ["--agent", str(DOMAINS_DIR / f"{agent}.yaml")]
    started = cli(*argv, timeout=240)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert str(cli.state.resolve() / "logs") in started.stdout.replace("\n", "")
        yield cli
    finally:
        cli("down", "--state-dir", str(cli.state), timeout=120)


def test_up_detach_returns_with_every_service_serving(mesh: Cli) -> None:
    state = json.loads((mesh.state / "mesh.json").read_text())
    assert all(process_alive(pid) for pid in mesh_pids(state))
    status = mesh.json("status", "--state-dir", str(mesh.state))
    assert {s["health"] for s in status["services"]} == {"SERVING"}
    assert {s["name"] for s in status["services"]} >= {"registry", "agent-refunds", "agent-training"}


def test_chaos_changes_the_dummy_at_run_time(mesh: Cli) -> None:
    assert mesh.json("chaos", "set", "--latency", "400") == {"latency": "0.400s"}
    # `set` keeps what it is not told: the latency stays beside the new rate.
    assert mesh.json("chaos", "set", "--exhausted-rate", "0.0", "--seed", "3") == {
        "latency": "0.400s",
        "seed": "3",
    }
    task = mesh.json("tasks", "submit", "--wait", "training", "Act on drill-1")
    assert task["state"] == "TASK_STATE_COMPLETED", task
    act = next(s for s in task["steps"] if s.get("toolName") == "dummy_act")
    assert float(act["duration"].rstrip("s")) >= 0.4, act  # the latency set a moment ago
    # `agentmesh up` recorded every service's spans: the task's trace, across the queue. Each
    # process writes its spans when they end (the attempt's last), so wait for all of them.
    wanted = (
        "SubmitTask",
        "task.attempt",
        "invoke_agent training",
        "chat scripted",
        "execute_tool dummy_act",
    )
    deadline = time.monotonic() + 30
    while True:
        traced = mesh("trace", task["taskId"], "--state-dir", str(mesh.state))
        complete = traced.returncode == 0 and all(name in traced.stdout for name in wanted)
        if complete or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert traced.returncode == 0, traced.stdout + traced.stderr
    for name in wanted:
        assert name in traced.stdout, f"waited 30 s for span {name!r} in the trace:\n{traced.stdout}"
    assert "input_tokens=" in traced.stdout
    assert mesh.json("chaos", "reset", "--stats") == {}
    shown = mesh.json("chaos", "show")
    assert shown["behaviour"] == {} and shown["calls"] == "0", shown
    refused = mesh("chaos", "set", "--failure-rate", "1.5")
    assert refused.returncode == 2


def test_submit_list_get_and_markup_printed_as_text(mesh: Cli) -> None:
    submitted = mesh.json("tasks", "submit", "training", f"Act on {MARKUP}")
    task_id = submitted["taskId"]
    got = mesh("tasks", "get", task_id)
    assert got.returncode == 0, got.stdout + got.stderr
    assert MARKUP in got.stdout and "training" in got.stdout
    listed = mesh("tasks", "list", "--domain", "training")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert task_id in listed.stdout and "[bold red]drill-7" in listed.stdout
    mine = mesh.json("tasks", "list", "--domain", "training", "--limit", "100")
    assert task_id in [t["taskId"] for t in mine]
    # A task id is found without its domain (every agent in the directory is asked).
    assert mesh.json("tasks", "get", task_id)["domain"] == "training"
    missing = mesh("tasks", "get", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_reject_and_cancel(mesh: Cli) -> None:
    waiting = mesh.json("tasks", "submit", "--wait", "refunds", INJECTED_MESSAGE)
    assert waiting["state"] == "TASK_STATE_INPUT_REQUIRED", waiting
    rejected = mesh.json("tasks", "reject", waiting["taskId"], "--reason", "no proof of loss", "--wait")
    events = [
        json.loads(line) for line in mesh("tasks", "watch", waiting["taskId"], "--json").stdout.splitlines()
    ]
    decision = next(e["approval"] for e in events if "approval" in e)
    assert not decision.get("approved") and decision["reason"] == "no proof of loss"
    assert rejected["state"] != "TASK_STATE_INPUT_REQUIRED"

    paused = mesh.json("tasks", "submit", "--wait", "refunds", INJECTED_MESSAGE)
    canceled = mesh.json("tasks", "cancel", paused["taskId"], "--reason", "duplicate ticket")
    assert canceled["state"] == "TASK_STATE_CANCELED", canceled


def test_approval_from_the_command_line_and_a_resumable_watch(mesh: Cli) -> None:
    waiting = mesh.json("tasks", "submit", "--wait", "refunds", INJECTED_MESSAGE)
    task_id = waiting["taskId"]
    assert waiting["state"] == "TASK_STATE_INPUT_REQUIRED", waiting
    assert waiting["pendingAction"]["kind"] == "PENDING_ACTION_KIND_APPROVAL"
    listed = mesh.json("tasks", "list", "--domain", "refunds", "--state", "input_required")
    assert task_id in [t["taskId"] for t in listed]
    text = mesh("tasks", "get", task_id, "--domain", "refunds")
    assert "[SYSTEM OVERRIDE]" in text.stdout  # the injected text, printed as text

    # The requester may not approve their own refund: `up` wrote a separate approver's token.
    refused = mesh("tasks", "approve", task_id)
    assert refused.returncode == 1 and "refunds:approve" in refused.stderr, refused.stderr
    approver = tomllib.loads(Path(mesh.env["AGENTMESH_PROFILE"]).read_text())["approver_token"]
    approved = mesh.json(
        "tasks", "approve", task_id, "--reason", "checked [with] the carrier", "--token", approver
    )
    assert approved["state"] == "TASK_STATE_WORKING", approved

    # The requester follows the task to its end (the watch ends after the last terminal change).
    events = [json.loads(line) for line in mesh("tasks", "watch", task_id, "--json").stdout.splitlines()]
    approvals = [e["approval"] for e in events if "approval" in e]
    assert approvals and approvals[0]["approved"] and approvals[0]["reason"] == "checked [with] the carrier"
    assert events[-1]["statusUpdate"]["state"] == "TASK_STATE_COMPLETED"
    # Resumed after an event id, the watch replays only what came later.
    middle = events[len(events) // 2]["eventId"]
    later = mesh("tasks", "watch", task_id, "--after", middle, "--json").stdout.splitlines()
    assert [json.loads(line)["eventId"] for line in later] == [
        e["eventId"] for e in events[len(events) // 2 + 1 :]
    ]
    timeline = mesh("tasks", "watch", task_id)
    assert (
        timeline.returncode == 0
        and "approved" in timeline.stdout
        and "checked [with] the carrier" in timeline.stdout
    )

    again = mesh("tasks", "approve", task_id, "--token", approver)
    assert again.returncode == 1, again.stdout + again.stderr


def test_down_leaves_no_process_behind(mesh: Cli) -> None:
    state = json.loads((mesh.state / "mesh.json").read_text())
    pids = mesh_pids(state)
    assert len(pids) == 2 + len(state["services"]) >= 3 + len(TOOLS) + len(AGENTS)  # + supervisor, valkey
    stopped = mesh.json("down", "--state-dir", str(mesh.state))
    assert sorted(stopped["stopped"]) == sorted(pids) and stopped["by_supervisor"], stopped
    assert [pid for pid in pids if process_alive(pid)] == []
    assert not (mesh.state / "mesh.json").exists()
    again = mesh("down", "--state-dir", str(mesh.state))
    assert again.returncode == 1 and "no mesh is running" in again.stderr

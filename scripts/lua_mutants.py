"""Hand-written mutants of the Lua scripts (`make mutate`): each guard removed or inverted, one at a time.

A Python mutation tool sees a Lua script as one string: corrupting it makes every test error, which
says nothing about whether the tests check each guard. Here every mutant is a working script with
one guard gone (or turned around). For each, the repository is copied to a temporary directory,
the mutant applied there, and the tests that guard that script run against it (real Redis): a
mutant must turn them red ("killed"). A survivor is listed with its reason in tests/MUTATION.md
under "Lua mutants"; the driver fails on any survivor not listed there.

    python scripts/lua_mutants.py [--only NAME ...] [--list]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDEMPOTENCY_TESTS = ["tests/integration/memory/test_idempotency.py"]
TASK_TESTS = [
    "tests/integration/memory/tasks/test_tasks.py",
    "tests/integration/memory/tasks/test_task_queue.py",
    "tests/integration/memory/tasks/test_task_worker.py",
    "tests/integration/memory/tasks/test_task_run.py",
]


TOKEN_GUARD = "if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end\n"
EXTEND_BODY = "return redis.call('PEXPIRE', KEYS[1], ARGV[2])"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    tests: list[str]
    what: str


MUTANTS = [
    # -- memory/idempotency.py -------------------------------------------------------------
    Mutant(
        "idem-begin-foreign",
        "memory/idempotency.py",
        "  if redis.call('EXISTS', KEYS[1]) == 1 then return {'foreign', ''} end\n",
        "",
        IDEMPOTENCY_TESTS,
        "BEGIN: a key holding something else is claimed over",
    ),
    Mutant(
        "idem-begin-conflict",
        "memory/idempotency.py",
        "if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then\n  return {'conflict', version}",
        "if false then\n  return {'conflict', version}",
        IDEMPOTENCY_TESTS,
        "BEGIN: another payload under the same key is not refused",
    ),
    Mutant(
        "idem-begin-in-flight",
        "memory/idempotency.py",
        "if state == 'pending' then",
        "if state ~= 'pending' then",
        IDEMPOTENCY_TESTS,
        "BEGIN: in flight and done swapped",
    ),
    Mutant(
        "idem-complete-token",
        "memory/idempotency.py",
        "if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end\n"
        "redis.call('HSET', KEYS[1], 'state', 'done'",
        "redis.call('HSET', KEYS[1], 'state', 'done'",
        IDEMPOTENCY_TESTS,
        "COMPLETE: a caller whose lease was taken over still stores its result",
    ),
    Mutant(
        "idem-release-token",
        "memory/idempotency.py",
        TOKEN_GUARD + "return redis.call('DEL', KEYS[1])",
        "return redis.call('DEL', KEYS[1])",
        IDEMPOTENCY_TESTS,
        "RELEASE: anyone's release deletes the holder's claim",
    ),
    Mutant(
        "idem-extend-token",
        "memory/idempotency.py",
        TOKEN_GUARD + EXTEND_BODY,
        EXTEND_BODY,
        IDEMPOTENCY_TESTS,
        "EXTEND: a stranger renews the holder's lease",
    ),
    Mutant(
        "idem-extend-inverted",
        "memory/idempotency.py",
        TOKEN_GUARD + EXTEND_BODY,
        TOKEN_GUARD.replace("~=", "==") + EXTEND_BODY,
        IDEMPOTENCY_TESTS,
        "EXTEND: only strangers renew",
    ),
    # -- memory/tasks/scripts.py: COMMIT ------------------------------------------------------
    Mutant(
        "commit-replay",
        "memory/tasks/scripts.py",
        "  if h[2] == ARGV[1] then return {'ok', h[3] or '0', h[7] or '', h[8] or '', ''} end\n",
        "",
        TASK_TESTS,
        "COMMIT: a change re-sent after a lost reply applies twice",
    ),
    Mutant(
        "commit-layout",
        "memory/tasks/scripts.py",
        "  if h[1] ~= LAYOUT then return {'corrupt', 'record'} end\n",
        "",
        TASK_TESTS,
        "COMMIT: a record of another layout is written over",
    ),
    Mutant(
        "commit-new-exists",
        "memory/tasks/scripts.py",
        "  if exists then return {'exists', h[6] or ''} end\n",
        "",
        TASK_TESTS,
        "COMMIT new: an existing task is created again",
    ),
    Mutant(
        "commit-missing",
        "memory/tasks/scripts.py",
        "elseif not exists then\n  return {'missing'}\n",
        "",
        TASK_TESTS,
        "COMMIT: a change to a task that does not exist is applied",
    ),
    Mutant(
        "commit-rev",
        "memory/tasks/scripts.py",
        "  if h[3] ~= ARGV[3] then return {'stale'} end\n",
        "",
        TASK_TESTS,
        "COMMIT rev: a change based on an old revision is applied",
    ),
    Mutant(
        "commit-fence",
        "memory/tasks/scripts.py",
        "  if h[4] ~= ARGV[3] or h[5] ~= '1' then return {'fenced', h[9] or '', h[4] or ''} end\n",
        "",
        TASK_TESTS,
        "COMMIT fence: an attempt that lost its task still writes",
    ),
    Mutant(
        "commit-fence-running",
        "memory/tasks/scripts.py",
        "if h[4] ~= ARGV[3] or h[5] ~= '1' then",
        "if h[4] ~= ARGV[3] then",
        TASK_TESTS,
        "COMMIT fence: the current attempt writes after it stopped running",
    ),
    Mutant(
        "commit-step-conflict",
        "memory/tasks/scripts.py",
        "if op.step and h[10] and h[10] ~= op.step[2] then return {'step_conflict'} end\n",
        "",
        TASK_TESTS,
        "COMMIT: a checkpointed step is overwritten with other content",
    ),
    # -- memory/tasks/scripts.py: the start of an attempt (CLAIM / START) ---------------------
    Mutant(
        "begin-live-lease",
        "memory/tasks/scripts.py",
        "  if alive(h.lease, h['until'], now) then\n",
        "  if false then\n",
        TASK_TESTS,
        "begin: a second attempt starts while the first one's lease is alive",
    ),
    Mutant(
        "begin-idle-state",
        "memory/tasks/scripts.py",
        "  if state ~= '1' and state ~= '2' then return {'idle', state or '', h.stop or '0'} end\n",
        "",
        TASK_TESTS,
        "begin: a finished or paused task is started again",
    ),
    Mutant(
        "begin-poison",
        "memory/tasks/scripts.py",
        "  if fails >= tonumber(p[3]) then\n",
        "  if false then\n",
        TASK_TESTS,
        "begin: a task whose attempts keep dying is never dead-lettered",
    ),
    Mutant(
        "commit-foreign-queue",
        "memory/tasks/scripts.py",
        "if (op.ack or op.touch or op.enqueue) and foreign(KEYS[3], 'stream') then "
        "return {'corrupt', 'queue'} end\n",
        "",
        TASK_TESTS,
        "COMMIT: a foreign key under the queue's name fails half-way instead of before the first write",
    ),
]


def _copy(target: Path) -> None:
    ignore = shutil.ignore_patterns(".venv", ".git", "mutants", "__pycache__", ".mypy_cache", ".ruff_cache")
    for name in (
        "agentmesh",
        "agents",
        "memory",
        "tool_registry",
        "examples",
        "tests",
        "proto",
        "pyproject.toml",
    ):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)


def _listed_equivalent() -> set[str]:
    """Mutant names tests/MUTATION.md lists as equivalent (a `lua:<name>` mention)."""
    text = (ROOT / "tests" / "MUTATION.md").read_text() if (ROOT / "tests" / "MUTATION.md").exists() else ""
    return {word.removeprefix("`lua:").rstrip("`") for word in text.split() if word.startswith("`lua:")}


def run(mutant: Mutant) -> tuple[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"lua-mutant-{mutant.name}-") as tmp:
        work = Path(tmp)
        _copy(work)
        path = work / mutant.path
        source = path.read_text()
        if source.count(mutant.original) != 1:
            return "stale (the guard's text changed: update the mutant)", 0.0
        path.write_text(source.replace(mutant.original, mutant.mutated))
        env = {**os.environ, "PYTHONPATH": str(work)}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        elapsed = time.monotonic() - started
    if result.returncode == 1:
        return "killed", elapsed
    if result.returncode == 0:
        return "SURVIVED", elapsed
    return f"error (pytest exit {result.returncode}): {result.stdout[-400:]}", elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name:24} {mutant.path:26} {mutant.what}")
        return 0
    equivalent = _listed_equivalent()
    bad = []
    for mutant in chosen:
        outcome, elapsed = run(mutant)
        print(f"{outcome:10.60} {mutant.name:24} {elapsed:6.1f} s  {mutant.what}", flush=True)
        if outcome != "killed" and not (outcome == "SURVIVED" and mutant.name in equivalent):
            bad.append(mutant.name)
    print(f"{len(chosen) - len(bad)}/{len(chosen)} Lua mutants killed or listed as equivalent")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Hand-written mutants of the Lua scripts (`make mutate`): each guard removed or inverted, one at a time.

A Python mutation tool sees a Lua script as one string: corrupting it makes every test error, which
says nothing about whether the tests check each guard. Here every mutant is a working script with
one guard gone (or turned around). For each, the repository is copied to a temporary directory,
the mutant applied there, and the tests that guard that script run against it (real Redis): a
mutant must turn them red ("killed"). A survivor is listed with its reason in tests/MUTATION.md
under "Lua mutants"; the driver fails on any survivor not listed there.

    python scripts/lua_mutants.py [--only NAME ...] [--list] [--tests PYTEST_ID ...]
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
        "idem-begin-resent",
        "memory/idempotency.py",
        "  if redis.call('HGET', KEYS[1], 'token') == ARGV[2] then return {'claimed'} end\n",
        "",
        IDEMPOTENCY_TESTS,
        "BEGIN: a claim re-sent after a lost reply is refused as in flight (its own claim blocks it)",
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
    # -- memory/idempotency.py: the rest of each script ----------------------------------------
    Mutant(
        "idem-begin-lease",
        "memory/idempotency.py",
        "  redis.call('PEXPIRE', KEYS[1], ARGV[3])\n  return {'claimed'}",
        "  return {'claimed'}",
        IDEMPOTENCY_TESTS,
        "BEGIN: a claim has no lease (a caller that dies holds the key forever)",
    ),
    Mutant(
        "idem-begin-done",
        "memory/idempotency.py",
        "return {'done', version, redis.call('HGET', KEYS[1], 'result') or ''}",
        "return {'in_flight', version, tostring(redis.call('PTTL', KEYS[1]))}",
        IDEMPOTENCY_TESTS,
        "BEGIN: a finished call is never replayed (answered as in flight)",
    ),
    Mutant(
        "idem-complete-inverted",
        "memory/idempotency.py",
        "if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end\n"
        "redis.call('HSET', KEYS[1], 'state', 'done'",
        "if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return 0 end\n"
        "redis.call('HSET', KEYS[1], 'state', 'done'",
        IDEMPOTENCY_TESTS,
        "COMPLETE: only strangers store a result",
    ),
    Mutant(
        "idem-complete-keeps-token",
        "memory/idempotency.py",
        "redis.call('HDEL', KEYS[1], 'token')\n",
        "",
        IDEMPOTENCY_TESTS,
        "COMPLETE: the holder's token survives completion (it can still release or renew the result)",
    ),
    Mutant(
        "idem-complete-window",
        "memory/idempotency.py",
        "redis.call('HDEL', KEYS[1], 'token')\nredis.call('PEXPIRE', KEYS[1], ARGV[3])\n",
        "redis.call('HDEL', KEYS[1], 'token')\n",
        IDEMPOTENCY_TESTS,
        "COMPLETE: a stored result expires with the claim's lease instead of the window",
    ),
    Mutant(
        "idem-release-inverted",
        "memory/idempotency.py",
        TOKEN_GUARD + "return redis.call('DEL', KEYS[1])",
        TOKEN_GUARD.replace("~=", "==") + "return redis.call('DEL', KEYS[1])",
        IDEMPOTENCY_TESTS,
        "RELEASE: only strangers release",
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
    Mutant(
        "commit-foreign-outbox",
        "memory/tasks/scripts.py",
        "if op.outbox and foreign(KEYS[4], 'zset') then return {'corrupt', 'outbox'} end\n",
        "",
        TASK_TESTS,
        "COMMIT: foreign data under the outbox fails half-way instead of before the first write",
    ),
    Mutant(
        "commit-foreign-dead",
        "memory/tasks/scripts.py",
        "if (op.dead or op.undead) and foreign(KEYS[5], 'stream') then "
        "return {'corrupt', 'dead letters'} end\n",
        "",
        TASK_TESTS,
        "COMMIT: foreign data under the dead letters fails half-way instead of before the first write",
    ),
    Mutant(
        "commit-foreign-index",
        "memory/tasks/scripts.py",
        "if op.index and foreign(KEYS[6], 'zset') then return {'corrupt', 'owner index'} end\n",
        "",
        TASK_TESTS,
        "COMMIT: foreign data under the owner index fails half-way instead of before the first write",
    ),
    Mutant(
        "commit-foreign-events",
        "memory/tasks/scripts.py",
        "    if j == 1 then return {'corrupt', 'events'} end\n",
        "",
        TASK_TESTS,
        "COMMIT: foreign data under the events key is a script error instead of a clean refusal",
    ),
    Mutant(
        "commit-rev-bump",
        "memory/tasks/scripts.py",
        "if nset > 0 or nclear > 0 then rev = rev + 1 end\n",
        "",
        TASK_TESTS,
        "COMMIT: a change does not move the revision (compare-and-set sees no change)",
    ),
    Mutant(
        "commit-heartbeat-cid",
        "memory/tasks/scripts.py",
        "if nset > 0 or nclear > 0 or nev > 0 or op.step then\n",
        "if true then\n",
        TASK_TESTS,
        "COMMIT: a pure lease renewal records a commit id (hides a re-sent change, bumps nothing)",
    ),
    Mutant(
        "commit-cancel-reported",
        "memory/tasks/scripts.py",
        "if cancel == nil then cancel = h[8] or '' end\n",
        "",
        TASK_TESTS,
        "COMMIT: a cancel requested meanwhile is not reported to the writer",
    ),
    Mutant(
        "commit-index-expiry",
        "memory/tasks/scripts.py",
        "  if redis.call('PTTL', KEYS[6]) < tonumber(op.index[2]) / 2 then\n",
        "  if false then\n",
        TASK_TESTS,
        "COMMIT: the owner index never gets its expiry",
    ),
    Mutant(
        "commit-index-renewal",
        "memory/tasks/scripts.py",
        "  if redis.call('PTTL', KEYS[6]) < tonumber(op.index[2]) / 2 then\n",
        "  if true then\n",
        TASK_TESTS,
        "COMMIT: the owner index's expiry is written by every creation (one write more each)",
    ),
    # -- memory/tasks/scripts.py: begin (shared by CLAIM and START) ---------------------------
    Mutant(
        "begin-corrupt",
        "memory/tasks/scripts.py",
        "  if failed(all) then return {'corrupt'} end\n",
        "",
        TASK_TESTS,
        "begin: foreign data under the task key is a script error instead of 'corrupt'",
    ),
    Mutant(
        "begin-missing",
        "memory/tasks/scripts.py",
        "  if #all == 0 then return {'missing'} end\n",
        "",
        TASK_TESTS,
        "begin: a vanished task is 'corrupt' (dead-lettered) instead of 'missing' (acknowledged)",
    ),
    Mutant(
        "begin-layout",
        "memory/tasks/scripts.py",
        "  if h.v ~= LAYOUT then return {'corrupt'} end\n",
        "",
        TASK_TESTS,
        "begin: a record of another layout is started (and written over)",
    ),
    Mutant(
        "begin-same-start",
        "memory/tasks/scripts.py",
        "    if sep and string.sub(h.lease, sep + 1) == p[1] then return {'started', all, {}, '0'} end\n",
        "",
        TASK_TESTS,
        "begin: a start re-sent after a lost reply is 'busy' (the task is stuck until its lease ends)",
    ),
    Mutant(
        "begin-same-start-any",
        "memory/tasks/scripts.py",
        "    if sep and string.sub(h.lease, sep + 1) == p[1] then return {'started', all, {}, '0'} end\n",
        "    if sep then return {'started', all, {}, '0'} end\n",
        TASK_TESTS,
        "begin: any start joins the live attempt (two workers run one task)",
    ),
    Mutant(
        "begin-lost",
        "memory/tasks/scripts.py",
        "  local lost = h.run == '1'\n",
        "  local lost = false\n",
        TASK_TESTS,
        "begin: an attempt whose worker died is not counted as failed (never dead-lettered)",
    ),
    Mutant(
        "begin-poison-bound",
        "memory/tasks/scripts.py",
        "  if fails >= tonumber(p[3]) then\n",
        "  if fails > tonumber(p[3]) then\n",
        TASK_TESTS,
        "begin: one lost attempt more than allowed",
    ),
    Mutant(
        "begin-lease-length",
        "memory/tasks/scripts.py",
        "  over[n + 17], over[n + 18] = 'until', int(now + tonumber(p[2]))\n",
        "  over[n + 17], over[n + 18] = 'until', int(now)\n",
        TASK_TESTS,
        "begin: the new attempt's lease is already over",
    ),
    # -- memory/tasks/scripts.py: CLAIM -------------------------------------------------------
    Mutant(
        "claim-memo",
        "memory/tasks/scripts.py",
        "  if sid == ARGV[3] then  -- this very claim was applied before; its reply was lost\n",
        "  if false then\n",
        TASK_TESTS,
        "CLAIM: a claim re-sent after a lost reply takes another entry (the first stays pending)",
    ),
    Mutant(
        "claim-memo-any",
        "memory/tasks/scripts.py",
        "  if sid == ARGV[3] then  -- this very claim was applied before; its reply was lost\n",
        "  if sid then\n",
        TASK_TESTS,
        "CLAIM: every later claim of the consumer answers the memo'd task again",
    ),
    Mutant(
        "claim-task-id",
        "memory/tasks/scripts.py",
        "  if not tid or string.sub(tid, 35) ~= ARGV[12] or not string.match(tid, TASK_ID) then\n",
        "  if not tid then\n",
        TASK_TESTS,
        "CLAIM: an entry naming no task of this shard is begun instead of dead-lettered",
    ),
    Mutant(
        "claim-task-shard",
        "memory/tasks/scripts.py",
        "  if not tid or string.sub(tid, 35) ~= ARGV[12] or not string.match(tid, TASK_ID) then\n",
        "  if not tid or not string.match(tid, TASK_ID) then\n",
        TASK_TESTS,
        "CLAIM: an entry naming a task of another shard is begun instead of dead-lettered",
    ),
    Mutant(
        "claim-ack-settled",
        "memory/tasks/scripts.py",
        "  if r[1] == 'missing' or r[1] == 'idle' then\n"
        "    redis.call('XACK', KEYS[1], ARGV[1], id)\n"
        "    redis.call('XDEL', KEYS[1], id)\n"
        "  else\n",
        "  if r[1] == 'missing' or r[1] == 'idle' then\n  else\n",
        TASK_TESTS,
        "CLAIM: entries of finished or vanished tasks stay pending (reclaimed again and again)",
    ),
    Mutant(
        "claim-memo-write",
        "memory/tasks/scripts.py",
        "      redis.call('SET', KEYS[2], ARGV[3] .. ' ' .. id .. ' ' .. tid, 'PX', ARGV[4])\n",
        "",
        TASK_TESTS,
        "CLAIM: no memo of the claim (a re-sent claim takes another entry)",
    ),
    # -- memory/tasks/scripts.py: START, RECOVER, REQUEUE, DEAD_LETTER --------------------------
    Mutant(
        "start-ack-settled",
        "memory/tasks/scripts.py",
        "if r[1] == 'missing' or r[1] == 'idle' then\n  redis.call('XACK', KEYS[3], ARGV[9], ARGV[10])\n",
        "if false then\n  redis.call('XACK', KEYS[3], ARGV[9], ARGV[10])\n",
        TASK_TESTS,
        "START: the entry of a finished or vanished task stays pending",
    ),
    Mutant(
        "recover-foreign",
        "memory/tasks/scripts.py",
        "if foreign(KEYS[1], 'zset') or foreign(KEYS[2], 'stream') then\n",
        "if false then\n",
        TASK_TESTS,
        "RECOVER: foreign data under the outbox or the queue is written over or half-written",
    ),
    Mutant(
        "recover-gone",
        "memory/tasks/scripts.py",
        "if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'gone' end\n",
        "",
        TASK_TESTS,
        "RECOVER: a run no longer registered (finished, handed over) is queued again",
    ),
    Mutant(
        "recover-dropped",
        "memory/tasks/scripts.py",
        "if failed(h) or (h[1] ~= '1' and h[1] ~= '2') then\n",
        "if failed(h) then\n",
        TASK_TESTS,
        "RECOVER: a finished or paused task is queued again",
    ),
    Mutant(
        "recover-alive",
        "memory/tasks/scripts.py",
        "if alive(h[2], h[3], clock()) then\n",
        "if false then\n",
        TASK_TESTS,
        "RECOVER: a live inline run is queued (two processes run one task)",
    ),
    Mutant(
        "recover-dead",
        "memory/tasks/scripts.py",
        "if alive(h[2], h[3], clock()) then\n",
        "if true then\n",
        TASK_TESTS,
        "RECOVER: a run whose process died is never queued",
    ),
    Mutant(
        "requeue-pending",
        "memory/tasks/scripts.py",
        "if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end\n"
        "redis.call('XDEL', KEYS[1], ARGV[2])\n"
        "return redis.call('XADD', KEYS[1], '*', 't', ARGV[3], 'e', ARGV[4])",
        "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
        "redis.call('XDEL', KEYS[1], ARGV[2])\n"
        "return redis.call('XADD', KEYS[1], '*', 't', ARGV[3], 'e', ARGV[4])",
        TASK_TESTS,
        "REQUEUE: an entry no longer pending (taken over, acknowledged) is queued once more",
    ),
    Mutant(
        "dead-letter-pending",
        "memory/tasks/scripts.py",
        "if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end\n"
        "redis.call('XDEL', KEYS[1], ARGV[2])\n"
        "return redis.call('XADD', KEYS[2]",
        "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
        "redis.call('XDEL', KEYS[1], ARGV[2])\n"
        "return redis.call('XADD', KEYS[2]",
        TASK_TESTS,
        "DEAD_LETTER: an entry no longer pending is dead-lettered (again)",
    ),
    Mutant(
        "dead-letter-foreign",
        "memory/tasks/scripts.py",
        "if foreign(KEYS[2], 'stream') then "
        "return redis.error_reply('WRONGTYPE foreign data under a queue key') end\n"
        "if redis.call('XACK'",
        "if redis.call('XACK'",
        TASK_TESTS,
        "DEAD_LETTER: foreign data under the dead letters: the entry is acknowledged and lost",
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


def run(mutant: Mutant, tests: list[str] | None = None) -> tuple[str, float]:
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
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *(tests or mutant.tests)],
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
    parser.add_argument(
        "--tests", nargs="*", default=[], help="run these tests instead (check that one test kills a mutant)"
    )
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name:24} {mutant.path:26} {mutant.what}")
        return 0
    equivalent = _listed_equivalent()
    bad = []
    for mutant in chosen:
        outcome, elapsed = run(mutant, args.tests)
        print(f"{outcome:10.60} {mutant.name:24} {elapsed:6.1f} s  {mutant.what}", flush=True)
        if outcome != "killed" and not (outcome == "SURVIVED" and mutant.name in equivalent):
            bad.append(mutant.name)
    print(f"{len(chosen) - len(bad)}/{len(chosen)} Lua mutants killed or listed as equivalent")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

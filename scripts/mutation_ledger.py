"""Check the last mutmut run against the ledger in tests/MUTATION.md (`make mutate`, after the run).

Every mutant mutmut reports as survived, suspicious or without tests must have its row in the
ledger (the block between the two markers below): killed by a named test since, equivalent (why)
or outside the safety property (why). A survivor without a row fails the check, and so does a run
that did not finish (mutants "not checked"). Timeouts count as killed, as mutmut counts them.
Rows whose mutant no longer survives are reported (a test added since kills it) but do not fail.

    python scripts/mutation_ledger.py            # runs `mutmut results` in the current directory
    mutmut results | python scripts/mutation_ledger.py -
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEDGER_FILE = ROOT / "tests" / "MUTATION.md"
START, END = "<!-- ledger:start -->", "<!-- ledger:end -->"
MUTANT = re.compile(r"`([\w.\u01c1]+__mutmut_\d+)`")  # mutmut names methods `xǁClassǁname`
NEEDS_A_ROW = {"survived", "suspicious", "no tests"}
FINE = {"killed", "timeout", "caught by type check"}


def ledger(text: str) -> set[str]:
    """Mutant names with a row in the ledger block of `text` (the first cell of a table row; names
    in the other cells are references)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{LEDGER_FILE}: no ledger block ({START} ... {END})")
    rows = (line.split("|")[1] for line in text[start:end].splitlines() if line.startswith("| `"))
    return {name for cell in rows for name in MUTANT.findall(cell)}


def statuses(lines: Iterable[str]) -> dict[str, str]:
    """`mutmut results` lines ("    name: status") as {name: status}."""
    found = {}
    for line in lines:
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def check(results: dict[str, str], listed: set[str]) -> tuple[list[str], list[str], list[str]]:
    """(survivors without a row, mutants not checked or of an unknown status, rows no longer needed)."""
    missing = sorted(n for n, s in results.items() if s in NEEDS_A_ROW and n not in listed)
    unfinished = sorted(f"{n}: {s}" for n, s in results.items() if s not in NEEDS_A_ROW | FINE)
    needing = {n for n, s in results.items() if s in NEEDS_A_ROW}
    stale = sorted(n for n in listed if n in results and n not in needing)
    return missing, unfinished, stale


def main(argv: list[str]) -> int:
    if argv[1:] == ["-"]:
        lines = sys.stdin.read().splitlines()
    else:
        run = subprocess.run(
            [sys.executable, "-m", "mutmut", "results", "--all", "true"],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            print("`mutmut results` failed: run `make mutate` (or `mutmut run`) first", file=sys.stderr)
            return 2
        lines = run.stdout.splitlines()
    results = statuses(lines)
    if not results:
        print("no mutmut results here: run `make mutate` (or `mutmut run`) first", file=sys.stderr)
        return 2
    missing, unfinished, stale = check(results, ledger(LEDGER_FILE.read_text()))
    needing = sum(1 for s in results.values() if s in NEEDS_A_ROW)
    print(
        f"{len(results)} mutants, {needing} survived or without tests, "
        f"{len(missing)} of them not in the ledger"
    )
    for name in stale:
        print(f"  in the ledger but no longer surviving (killed since?): {name}")
    for line in unfinished:
        print(f"  not finished: {line}")
    for name in missing:
        print(f"  NOT IN THE LEDGER: {name}   (`mutmut show {name}`)")
    if missing or unfinished:
        print(
            f"add a row for each to the ledger in {LEDGER_FILE.relative_to(ROOT)} "
            "(killed by / equivalent / outside the safety property)"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

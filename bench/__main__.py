"""Run every bench module's `main()` (or the ones named: `python -m bench registry kit`).

`--quick` shortens every module's rounds (a check that all of it runs, in a few minutes).
Modules whose `main()` returns `bench.summary.Row`s feed the summary table written at the top
of bench/RESULTS.md (`--no-write` only prints it), and every closed loop's latencies are drawn
into bench/latency.png next to it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import pkgutil
import platform
import shutil
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).parent
HELPERS = {"common", "summary"}
RESULTS = HERE / "RESULTS.md"
PLOT = HERE / "latency.png"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def _versions() -> str:
    names = ("grpcio", "protobuf", "redis", "aiohttp")
    parts = [f"Python {platform.python_version()}"] + [f"{n} {metadata.version(n)}" for n in names]
    server = shutil.which("valkey-server") or shutil.which("redis-server")
    if server:
        out = subprocess.run(
            [server, "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        parts.append(" ".join(out[:3]))
    return ", ".join(parts)


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, cwd=HERE
    )
    return out.stdout.strip() or "unknown"


def plot(samples: Mapping[str, Sequence[float]], path: Path) -> None:
    """Box plots of every closed loop's latencies (log scale), one row per loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, values in samples.items() if values]
    if not labels:
        return
    figure, axes = plt.subplots(figsize=(11, 0.32 * len(labels) + 1.5))
    axes.boxplot(
        [samples[label] for label in labels], orientation="horizontal", whis=(1, 99), showfliers=False
    )
    axes.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("latency, ms (box: p25-p75, line: p50, whiskers: p1-p99)")
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("modules", nargs="*", help="only these modules (default: all)")
    parser.add_argument(
        "--quick", action="store_true", help="short rounds: check it all runs in a few minutes"
    )
    parser.add_argument("--no-write", action="store_true", help="print the summary, do not touch RESULTS.md")
    parser.add_argument(
        "--write",
        action="store_true",
        help="also rewrite RESULTS.md's summary when only some modules ran (by default only a full run does,"
        " so the table always comes from one run of everything)",
    )
    args = parser.parse_args()
    if args.quick:
        os.environ["BENCH_QUICK"] = "1"  # read by bench.common at import, before any module loads it
    from bench import common, summary

    facts = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "mode": "quick (short rounds: rough figures)" if common.QUICK else "full",
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}",
        "versions": _versions(),
        "load average before": _load(),
    }
    rows: list[summary.Row] = []
    failures: dict[str, str] = {}
    ran = []
    for module in pkgutil.iter_modules([str(HERE)]):
        name = module.name
        if name.startswith("_") or name in HELPERS or (args.modules and name not in args.modules):
            continue
        print(f"== bench.{name}", flush=True)
        try:
            entry = getattr(importlib.import_module(f"bench.{name}"), "main", None)
        except Exception as error:  # a module that cannot even load is a failed row, not a crash
            traceback.print_exc()
            failures[name] = f"{type(error).__name__}: {error}"[:120]
            continue
        if not callable(entry):
            continue
        common.CURRENT[0] = name
        ran.append(name)
        sys.argv = [f"bench.{name}"]  # modules with their own argument parsers see no bench arguments
        try:
            result = entry()
        except Exception as error:  # one module's failure is reported in the table, the others still run
            traceback.print_exc()
            failures[name] = f"{type(error).__name__}: {error}"[:120]
            continue
        if isinstance(result, list):
            rows += [row for row in result if isinstance(row, summary.Row)]
    facts["load average after"] = _load()
    facts["modules"] = ", ".join(ran)
    block = summary.render(rows, facts, failures=failures)
    print(block)
    if args.modules and not args.write:
        print("only some modules ran: RESULTS.md's summary is left as it is (--write to replace it)")
    elif not args.no_write:
        RESULTS.write_text(summary.replace_summary(RESULTS.read_text(), block))
        plot(common.SAMPLES, PLOT)
        print(f"wrote {RESULTS} and {PLOT}")


if __name__ == "__main__":
    main()

"""The summary table at the top of bench/RESULTS.md: pure functions from results to markdown.

Every bench module's `main()` may return a list of `Row`s (one per target); `python -m bench`
collects them with the machine facts and rewrites the block between the two markers at the
top of RESULTS.md, keeping every older note below it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

START = "<!-- bench-summary:start -->"
END = "<!-- bench-summary:end -->"


@dataclass(frozen=True)
class Row:
    """One target of one module: a baseline and agentmesh's figure measured in the same run."""

    module: str
    metric: str
    agentmesh: float
    unit: str
    target: str
    met: bool | None
    baseline: float | None = None
    ratio: float | None = None
    note: str = ""


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}" if abs(value) < 1 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def _met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "-"}[met]


def render(
    rows: Sequence[Row], facts: Mapping[str, str], *, failures: Mapping[str, str] | None = None
) -> str:
    """The markdown block (markers included) for `rows`, measured on a machine described by `facts`."""
    lines = [START, "## Summary of the last `make bench` run", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    lines += [
        "",
        "| module | metric | baseline | agentmesh | ratio | target | met? |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        metric = f"{row.metric} ({row.note})" if row.note else row.metric
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        baseline, value = _number(row.baseline, row.unit), _number(row.agentmesh, row.unit)
        lines.append(
            f"| {row.module} | {metric} | {baseline} | {value} | {ratio} | {row.target} | {_met(row.met)} |"
        )
    for module, error in (failures or {}).items():
        lines.append(f"| {module} | run failed: {error} | - | - | - | - | **no** |")
    missed = [row for row in rows if row.met is False]
    lines += ["", f"{len(missed)} of {sum(r.met is not None for r in rows)} targets missed in this run."]
    lines += [END, ""]
    return "\n".join(lines)


def replace_summary(document: str, block: str) -> str:
    """`document` with its summary block replaced by `block` (inserted after the title when there is none)."""
    if START in document and END in document:
        head, _, rest = document.partition(START)
        _, _, tail = rest.partition(END)
        return head + block.rstrip("\n") + tail
    title, newline, body = document.partition("\n")
    if not title.startswith("# "):
        return block + "\n" + document
    return title + newline + "\n" + block + body

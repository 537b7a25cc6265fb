"""The `make bench` summary: results → markdown, and the block replaced at the top of RESULTS.md."""

from __future__ import annotations

from bench.summary import END, START, Row, render, replace_summary

FACTS = {"machine": "2 cores", "load average before": "1.00 (1 min)"}
ROWS = [
    Row("tasks", "task cycle / raw, 1 worker", 310.0, "/s", "≥ 0.5x", False, baseline=1000.0, ratio=0.31),
    Row("agent", "overhead per step", 0.8, "ms", "≤ 1 ms", True, note="rounds 0.7, 0.9"),
    Row("agent", "Runs/s, 16 in flight", 180.0, "/s", "-", None),
]


def test_render_one_line_per_row_with_verdicts_and_facts() -> None:
    block = render(ROWS, FACTS, failures={"registry": "RuntimeError: boom"})
    lines = block.splitlines()
    assert lines[0] == START and lines[-1] == END
    assert "- machine: 2 cores" in lines
    assert "| tasks | task cycle / raw, 1 worker | 1,000 /s | 310 /s | 0.31x | ≥ 0.5x | **no** |" in lines
    assert "| agent | overhead per step (rounds 0.7, 0.9) | - | 0.8 ms | - | ≤ 1 ms | yes |" in lines
    assert "| agent | Runs/s, 16 in flight | - | 180 /s | - | - | - |" in lines
    assert "| registry | run failed: RuntimeError: boom | - | - | - | - | **no** |" in lines
    assert "1 of 2 targets missed in this run." in lines


def test_summary_goes_after_the_title_and_older_notes_stay() -> None:
    document = "# Benchmark results\n\nMethod: older notes.\n"
    first = replace_summary(document, render(ROWS[:1], FACTS))
    assert first.startswith("# Benchmark results\n\n" + START)
    assert first.endswith("Method: older notes.\n")
    second = replace_summary(first, render(ROWS[1:], FACTS))
    assert second.count(START) == 1 and second.count(END) == 1
    assert "task cycle" not in second and "overhead per step" in second
    assert second.endswith("Method: older notes.\n")

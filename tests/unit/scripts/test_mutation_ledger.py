"""The check `make mutate` ends with: every mutmut survivor has its row in tests/MUTATION.md."""

from __future__ import annotations

from scripts.mutation_ledger import END, LEDGER_FILE, START, check, ledger, statuses

RESULTS = """
    agents.runner.xǁ_Checkpointsǁkick__mutmut_4: survived
    agents.runner.xǁ_Checkpointsǁkick__mutmut_5: timeout
    agents.runner.x__count__mutmut_2: survived
    memory.idempotency.xǁIdempotencyStoreǁbegin__mutmut_4: killed
    tool_registry.breaker.xǁBreakerBoardǁ_report__mutmut_2: no tests
"""


def _ledger(*names: str) -> str:
    rows = "\n".join(
        f"| `{name}` | a change | equivalent | as `agents.runner.x__count__mutmut_9` |" for name in names
    )
    before = "# Mutation testing\n\n`agents.runner.x_drive__mutmut_1` outside the block\n\n"
    return f"{before}{START}\n{rows}\n{END}\n"


def test_results_lines_are_read_with_method_names_and_every_status() -> None:
    found = statuses(RESULTS.splitlines())
    assert found["agents.runner.xǁ_Checkpointsǁkick__mutmut_5"] == "timeout"
    assert found["tool_registry.breaker.xǁBreakerBoardǁ_report__mutmut_2"] == "no tests"
    assert len(found) == 5


def test_a_survivor_or_a_mutant_without_tests_needs_a_row_in_the_block() -> None:
    results = statuses(RESULTS.splitlines())
    listed = ledger(_ledger("agents.runner.xǁ_Checkpointsǁkick__mutmut_4"))
    assert "agents.runner.x_drive__mutmut_1" not in listed  # named outside the block: no row
    assert "agents.runner.x__count__mutmut_9" not in listed  # named in a reason: no row
    missing, unfinished, stale = check(results, listed)
    assert missing == [
        "agents.runner.x__count__mutmut_2",
        "tool_registry.breaker.xǁBreakerBoardǁ_report__mutmut_2",
    ]
    assert unfinished == [] and stale == []


def test_a_row_for_every_survivor_passes_and_a_killed_one_is_reported_as_stale() -> None:
    results = statuses(RESULTS.splitlines())
    listed = ledger(
        _ledger(
            "agents.runner.xǁ_Checkpointsǁkick__mutmut_4",
            "agents.runner.x__count__mutmut_2",
            "tool_registry.breaker.xǁBreakerBoardǁ_report__mutmut_2",
            "memory.idempotency.xǁIdempotencyStoreǁbegin__mutmut_4",
        )
    )
    missing, unfinished, stale = check(results, listed)
    assert missing == [] and unfinished == []
    assert stale == ["memory.idempotency.xǁIdempotencyStoreǁbegin__mutmut_4"]


def test_a_run_that_did_not_finish_fails_the_check() -> None:
    results = statuses([*RESULTS.splitlines(), "    agents.runner.x__count__mutmut_3: not checked"])
    _, unfinished, _ = check(results, set())
    assert unfinished == ["agents.runner.x__count__mutmut_3: not checked"]


def test_the_ledger_of_the_repository_names_mutants() -> None:
    listed = ledger(LEDGER_FILE.read_text())
    assert len(listed) > 100
    assert all("__mutmut_" in name and "." in name for name in listed)

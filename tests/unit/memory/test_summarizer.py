from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from memory.context import Turn, TurnRole, TurnToolCall
from memory.summarizer import DeterministicSummarizer, Summarizer, summarize_lines, summary_prompt

TURNS = [
    Turn.user("Where is my order A-1?\nIt was due Monday."),
    Turn.assistant(tool_calls=[TurnToolCall("c1", "orders_get", '{"order_id": "A-1"}')]),
    Turn.tool("c1", "orders_get", "Traceback (most recent call last):\n  boom", is_error=True),
    Turn.assistant("The order lookup failed; I will retry."),
]


async def test_deterministic_summary_is_stable_and_readable() -> None:
    summarize: Summarizer = DeterministicSummarizer()
    first = await summarize(TURNS)
    assert first == await summarize(list(TURNS))
    assert first.splitlines() == [
        "User: Where is my order A-1? It was due Monday.",
        'Assistant called orders_get({"order_id": "A-1"})',
        "Tool orders_get failed: Traceback (most recent call last):",
        "Assistant: The order lookup failed; I will retry.",
    ]


async def test_previous_summary_is_carried_forward_and_bounded() -> None:
    summarize = DeterministicSummarizer(max_lines=5)
    summary = ""
    for round_ in range(4):
        turns = [Turn.user(f"question {round_}"), Turn.assistant(f"answer {round_}")]
        summary = await summarize([Turn.summary(summary), *turns] if summary else turns)
    lines = summary.splitlines()
    assert len(lines) == 5
    assert lines[0] == "(4 earlier events omitted)"
    assert lines[-1] == "Assistant: answer 3"


@given(st.lists(st.text(max_size=400), max_size=30), st.integers(2, 20))
def test_summary_never_exceeds_its_line_bound(contents: list[str], max_lines: int) -> None:
    turns = [Turn(TurnRole.USER if i % 2 else TurnRole.ASSISTANT, c) for i, c in enumerate(contents)]
    once = summarize_lines(turns, max_lines=max_lines, line_chars=80)
    assert once == summarize_lines(turns, max_lines=max_lines, line_chars=80)
    assert len(once.splitlines()) <= max_lines
    assert all(len(line) <= 80 for line in once.splitlines())


def test_model_prompt_flattens_events() -> None:
    messages = summary_prompt([Turn.summary("before"), *TURNS], max_words=50)
    assert messages[0]["role"] == "system" and "50 words" in messages[0]["content"]
    assert messages[1]["role"] == "user"
    assert messages[1]["content"].startswith("Earlier summary:\nbefore\nUser: Where is my order A-1?")
    assert "Tool orders_get error: Traceback" in messages[1]["content"]

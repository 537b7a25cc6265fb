"""Summarizers fold old turns into a session's running summary.

A summarizer is any async callable taking the turns to fold (oldest first)
and returning the new summary text:

    async def summarize(turns: Sequence[Turn]) -> str

When the session already has a summary, it comes first in `turns`, as a
`TurnRole.SUMMARY` turn, so the new summary can carry it forward. The agent runtime
supplies a model-backed summarizer (a tool-less chat call; `summary_prompt`
builds its messages); `DeterministicSummarizer` serves tests and the offline
demo: the same turns always give the same text, one line per event, bounded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from memory.context import Turn, TurnRole

SUMMARY_INSTRUCTIONS = (
    "You maintain the running summary of a conversation between a user and an assistant that "
    "uses tools. Rewrite the summary so it includes the earlier summary (if any) and the new "
    "events below. Keep facts, decisions, identifiers (order ids, amounts, dates) and open "
    "questions; drop pleasantries, raw logs and stack traces (one line per failed tool call is "
    "enough). Answer with the summary only, at most {max_words} words."
)


class Summarizer(Protocol):
    """Turns to fold (previous summary first, as a SUMMARY turn) -> the new running summary."""

    def __call__(self, turns: Sequence[Turn], /) -> Awaitable[str]: ...


def _squeeze(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)].rstrip() + "…"


def event_line(turn: Turn, line_chars: int = 160) -> str:
    """One summary line for a turn (deterministic)."""
    if turn.role is TurnRole.USER:
        return _squeeze(f"User: {turn.content}", line_chars)
    if turn.role is TurnRole.ASSISTANT:
        if turn.tool_calls:
            calls = ", ".join(f"{c.name}({_squeeze(c.arguments, 60)})" for c in turn.tool_calls)
            said = f" — {turn.content}" if turn.content else ""
            return _squeeze(f"Assistant called {calls}{said}", line_chars)
        return _squeeze(f"Assistant: {turn.content}", line_chars)
    if turn.role is TurnRole.TOOL:
        first = next((line for line in turn.content.splitlines() if line.strip()), "")
        verb = "failed" if turn.is_error else "returned"
        return _squeeze(f"Tool {turn.name or 'call'} {verb}: {first}", line_chars)
    return _squeeze(turn.content, line_chars)


def summarize_lines(turns: Sequence[Turn], *, max_lines: int = 40, line_chars: int = 160) -> str:
    """The deterministic summary: earlier summary lines, then one line per turn; the newest `max_lines`."""
    lines: list[str] = []
    omitted = 0
    for turn in turns:
        if turn.role is TurnRole.SUMMARY:
            for line in turn.content.splitlines():
                if line.startswith("(") and line.endswith("earlier events omitted)"):
                    omitted += int(line[1:].split(" ", 1)[0])
                elif line.strip():
                    lines.append(line)
        else:
            lines.append(event_line(turn, line_chars))
    if len(lines) > max_lines:
        omitted += len(lines) - max_lines + 1
        lines = lines[-(max_lines - 1) :]
    if omitted:
        lines.insert(0, f"({omitted} earlier events omitted)")
    return "\n".join(lines)


class DeterministicSummarizer:
    """Summarizer for tests and the offline demo: `summarize_lines`, no model call."""

    def __init__(self, *, max_lines: int = 40, line_chars: int = 160) -> None:
        if max_lines < 2 or line_chars < 20:
            raise ValueError("max_lines must be >= 2 and line_chars >= 20")
        self.max_lines = max_lines
        self.line_chars = line_chars

    async def __call__(self, turns: Sequence[Turn], /) -> str:
        return summarize_lines(turns, max_lines=self.max_lines, line_chars=self.line_chars)


def _transcript_entry(turn: Turn, limit: int) -> str:
    content = turn.content if len(turn.content) <= limit else turn.content[:limit] + " …[truncated]"
    if turn.role is TurnRole.SUMMARY:
        return f"Earlier summary:\n{content}"
    if turn.role is TurnRole.TOOL:
        kind = "error" if turn.is_error else "result"
        return f"Tool {turn.name or 'call'} {kind}: {content}"
    if turn.role is TurnRole.ASSISTANT and turn.tool_calls:
        calls = ", ".join(f"{c.name}({c.arguments[:limit]})" for c in turn.tool_calls)
        return f"Assistant called {calls}" + (f": {content}" if content else "")
    return f"{turn.role.value.capitalize()}: {content}"


def summary_prompt(
    turns: Sequence[Turn], *, max_words: int = 200, entry_chars: int = 2000
) -> list[dict[str, Any]]:
    """Chat messages for a model-backed summarizer: instructions, then the events as one transcript.

    The events are flattened into text (not replayed as chat turns) so the model
    summarises them instead of continuing the conversation, and so tool results
    need no matching calls.
    """
    transcript = [_transcript_entry(turn, entry_chars) for turn in turns]
    return [
        {"role": "system", "content": SUMMARY_INSTRUCTIONS.format(max_words=max_words)},
        {"role": "user", "content": "\n".join(transcript)},
    ]

"""Bounded context packets and the compaction policy (pure: no I/O).

A *context packet* is what the next model call sees of a session: one system
text (the user's pinned facts + the running summary) and the most recent turns
as OpenAI-compatible chat messages, never more than a token budget. Turns are
packed in *units* that a chat API accepts as a whole: an assistant turn that
called tools travels with the tool results answering it, so a packet never
holds a tool result without its call (the API would refuse it).

Priorities inside the budget, highest first:

1. the latest user turn (always present; shortened only if it alone exceeds
   the budget);
2. the system text: pinned facts (at most `facts_share` of the budget), then
   the running summary (at most `summary_share`, newest part kept);
3. the turns after the latest user turn (the current task's work), newest first;
4. older turns, newest first.

Whatever did not fit is reported (`turns_omitted`, `needs_compaction`): the
runner then calls compaction, which folds old turns and verbose tool errors
into the running summary through a summarizer (memory/summarizer.py);
`summary_limit` bounds the stored summary so later packets carry it whole.

Token counts come from a `TokenCounter` (callable str -> int). Use the model's
tokenizer when the runtime has one; otherwise `estimate_tokens`: one token per
4 ASCII characters plus one per non-ASCII character (CJK and most non-Latin
scripts cost about a token per character; this over-counts accented Latin a
little, which errs on the safe side). Each message adds `MESSAGE_OVERHEAD`
tokens for its role and separators, each tool call `TOOL_CALL_OVERHEAD`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

TokenCounter = Callable[[str], int]

MESSAGE_OVERHEAD = 4
TOOL_CALL_OVERHEAD = 4
# Below this a packet cannot hold a minimal user turn and a system line.
MIN_BUDGET = 64
TRUNCATION_MARK = " …[truncated]"
FACTS_HEADER = "Known facts about the user (long-term memory):"
SUMMARY_HEADER = "Summary of the earlier conversation:"
ERROR_STUB_SUFFIX = " …[full error folded into the summary]"


def estimate_tokens(text: str) -> int:
    """Token estimate without a tokenizer: ceil(ASCII chars / 4) + non-ASCII chars."""
    if not text:
        return 0
    if text.isascii():
        return (len(text) + 3) // 4
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


class TurnRole(enum.StrEnum):
    """Who produced a turn. SUMMARY turns are sent with the chat role `system`."""

    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    SUMMARY = "summary"


_CHAT_ROLE = {
    TurnRole.USER: "user",
    TurnRole.ASSISTANT: "assistant",
    TurnRole.TOOL: "tool",
    TurnRole.SUMMARY: "system",
}


@dataclass(frozen=True, slots=True)
class TurnToolCall:
    """One function call the model asked for: `arguments` is the JSON text the model produced."""

    call_id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True)
class Turn:
    """One entry of a session.

    `tokens` is the turn's token count as a chat message (overhead included),
    filled in by the session store when the turn is appended so packing never
    re-tokenizes history; 0 means "not counted yet". `task_id`/`step` record
    which task step produced the turn. `compacted` marks a tool error whose
    full text was folded into the summary.
    """

    role: TurnRole
    content: str = ""
    tool_calls: tuple[TurnToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    is_error: bool = False
    task_id: str = ""
    step: int = -1
    at: float = 0.0
    tokens: int = 0
    compacted: bool = False

    @classmethod
    def user(cls, content: str, **kwargs: Any) -> Turn:
        return cls(TurnRole.USER, content, **kwargs)

    @classmethod
    def assistant(cls, content: str = "", tool_calls: Sequence[TurnToolCall] = (), **kwargs: Any) -> Turn:
        return cls(TurnRole.ASSISTANT, content, tool_calls=tuple(tool_calls), **kwargs)

    @classmethod
    def tool(cls, call_id: str, name: str, content: str, *, is_error: bool = False, **kwargs: Any) -> Turn:
        """A tool observation (already summarised by the runner: what the model needs, not raw logs)."""
        return cls(TurnRole.TOOL, content, tool_call_id=call_id, name=name, is_error=is_error, **kwargs)

    @classmethod
    def summary(cls, content: str, **kwargs: Any) -> Turn:
        return cls(TurnRole.SUMMARY, content, **kwargs)

    def to_message(self) -> dict[str, Any]:
        """The OpenAI-compatible chat message for this turn."""
        return _message(self, self.tool_calls)


def _message(turn: Turn, calls: Sequence[TurnToolCall]) -> dict[str, Any]:
    return chat_message(
        _CHAT_ROLE[turn.role],
        turn.content,
        tool_calls=calls,
        tool_call_id=turn.tool_call_id,
        name=turn.name,
    )


def chat_message(
    role: str,
    content: str,
    *,
    tool_calls: Sequence[TurnToolCall] = (),
    tool_call_id: str = "",
    name: str = "",
) -> dict[str, Any]:
    """The one OpenAI-compatible chat message serializer (the model client's wire uses it too).

    An assistant message with tool calls has `content` None when empty; a tool message names the
    call it answers (and the tool, when known).
    """
    message: dict[str, Any] = {"role": role, "content": content}
    if role == "assistant" and tool_calls:
        message["content"] = content or None
        message["tool_calls"] = [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in tool_calls
        ]
    elif role == "tool":
        message["tool_call_id"] = tool_call_id
        if name:
            message["name"] = name
    return message


def message_tokens(message: dict[str, Any], counter: TokenCounter = estimate_tokens) -> int:
    """Tokens of one chat message as packets count them (the property the budget holds for)."""
    total = MESSAGE_OVERHEAD + counter(message.get("content") or "")
    total += counter(message.get("tool_call_id", "")) + counter(message.get("name", ""))
    for call in message.get("tool_calls", ()):
        function = call["function"]
        total += TOOL_CALL_OVERHEAD + counter(call["id"]) + counter(function["name"])
        total += counter(function["arguments"])
    return total


def turn_tokens(turn: Turn, counter: TokenCounter = estimate_tokens) -> int:
    return message_tokens(turn.to_message(), counter)


def count_turn(turn: Turn, counter: TokenCounter = estimate_tokens) -> Turn:
    """The turn with its token count filled in."""
    return replace(turn, tokens=turn_tokens(turn, counter))


@dataclass(frozen=True, slots=True)
class ContextPolicy:
    """How a packet shares its budget and when compaction runs.

    - `facts_share` / `summary_share`: the most of the budget pinned facts and
      the running summary may take;
    - `compact_at`: stored turns above this share of the budget ask for compaction;
    - `keep_share`: compaction keeps the newest turns up to this share;
    - tool errors longer than `verbose_error_tokens` are folded into the summary
      and leave a stub of `error_stub_chars` characters.
    """

    facts_share: float = 0.15
    summary_share: float = 0.25
    compact_at: float = 0.8
    keep_share: float = 0.5
    verbose_error_tokens: int = 120
    error_stub_chars: int = 160

    def __post_init__(self) -> None:
        for name in ("facts_share", "summary_share", "compact_at", "keep_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")
        if self.facts_share + self.summary_share >= 1:
            raise ValueError("facts_share + summary_share must leave room for turns")


DEFAULT_POLICY = ContextPolicy()


@dataclass(frozen=True, slots=True)
class ContextPacket:
    """What the next model call sees of a session.

    Send `as_messages()` (a leading system message, then the turns), or merge
    `system` into your own system prompt and send `messages`; both fit the
    budget. `tokens` is the packet's size as counted by `message_tokens`.
    """

    system: str
    messages: list[dict[str, Any]]
    tokens: int
    budget: int
    turns_included: int = 0
    turns_omitted: int = 0
    facts_included: int = 0
    facts_omitted: int = 0
    summary_included: bool = False
    summary_truncated: bool = False
    latest_user_truncated: bool = False
    needs_compaction: bool = False
    # Tokens of the stored turns looked at (all of them, unless older ones could not fit anyway).
    stored_tokens: int = 0

    def as_messages(self) -> list[dict[str, Any]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages


@dataclass(frozen=True, slots=True)
class _Unit:
    """Turns a chat API accepts only together: an assistant turn and the tool results answering it."""

    start: int
    turns: tuple[Turn, ...]
    has_user: bool = False


def group_units(turns: Sequence[Turn]) -> list[_Unit]:
    """Split turns into units: [assistant-with-calls + its tool results], any other single turn."""
    units: list[_Unit] = []
    index = 0
    while index < len(turns):
        turn = turns[index]
        members = [turn]
        if turn.role is TurnRole.ASSISTANT and turn.tool_calls:
            pending = {c.call_id for c in turn.tool_calls}
            while index + len(members) < len(turns):
                following = turns[index + len(members)]
                if following.role is not TurnRole.TOOL or following.tool_call_id not in pending:
                    break
                pending.discard(following.tool_call_id)
                members.append(following)
        units.append(_Unit(index, tuple(members), has_user=turn.role is TurnRole.USER))
        index += len(members)
    return units


def _render(unit: _Unit) -> list[dict[str, Any]]:
    """Chat messages for a unit; calls without a result are left out, orphan tool results dropped."""
    head = unit.turns[0]
    if head.role is TurnRole.TOOL:
        return []  # its call was dropped (hard cap); a tool message without its call is refused by APIs
    if head.role is TurnRole.ASSISTANT and head.tool_calls:
        answered = {t.tool_call_id for t in unit.turns[1:]}
        calls = [c for c in head.tool_calls if c.call_id in answered]
        if not calls and not head.content:
            return []
        return [_message(head, calls)] + [t.to_message() for t in unit.turns[1:]]
    return [head.to_message()]


def _unit_tokens(unit: _Unit, messages: list[dict[str, Any]], counter: TokenCounter) -> int:
    head = unit.turns[0]
    complete = len(messages) == len(unit.turns) and (
        not head.tool_calls or len(messages[0].get("tool_calls", ())) == len(head.tool_calls)
    )
    if complete and all(t.tokens for t in unit.turns):
        return sum(t.tokens for t in unit.turns)  # counted once, when appended
    return sum(message_tokens(m, counter) for m in messages)


def _newest_first(count: int, latest: int | None) -> list[int]:
    """Unit positions by priority after the latest user turn: the units after it, then the ones before."""
    if latest is None:
        return list(range(count - 1, -1, -1))
    return [*range(count - 1, latest, -1), *range(latest - 1, -1, -1)]


def _latest_user(units: Sequence[_Unit]) -> int | None:
    for position in range(len(units) - 1, -1, -1):
        if units[position].has_user:
            return position
    return None


def _fit_prefix(text: str, limit: int, counter: TokenCounter, mark: str) -> str:
    """The longest prefix of `text` (plus `mark`) whose count is at most `limit`; '' if none."""
    if counter(text) <= limit:
        return text
    low, high, best = 0, len(text), ""
    while low <= high:
        middle = (low + high) // 2
        candidate = text[:middle] + mark
        if counter(candidate) <= limit:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


def fit_suffix(text: str, limit: int, counter: TokenCounter, mark: str) -> str:
    """`text` if it fits in `limit` tokens, else `mark` + its longest suffix that does ('' if none)."""
    if counter(text) <= limit:
        return text
    low, high, best = 0, len(text), ""
    while low <= high:
        middle = (low + high) // 2
        candidate = mark + text[len(text) - middle :]
        if counter(candidate) <= limit:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


@dataclass
class _SystemText:
    facts: list[str] = field(default_factory=list)
    summary: str = ""

    def text(self) -> str:
        parts = []
        if self.facts:
            parts.append("\n".join([FACTS_HEADER, *self.facts]))
        if self.summary:
            parts.append(f"{SUMMARY_HEADER}\n{self.summary}")
        return "\n\n".join(parts)


def _system_tokens(system: _SystemText, counter: TokenCounter) -> int:
    text = system.text()
    return message_tokens({"role": "system", "content": text}, counter) if text else 0


def _pack_system(
    facts: Sequence[tuple[str, str]],
    summary: str,
    *,
    budget: int,
    available: int,
    counter: TokenCounter,
    policy: ContextPolicy,
) -> tuple[_SystemText, int, bool]:
    """Facts (in the given priority order) then the summary, each within its share."""
    system = _SystemText()
    facts_cap = min(available, int(budget * policy.facts_share))
    for key, value in facts:
        system.facts.append(f"- {key}: {value}")
        if _system_tokens(system, counter) > facts_cap:
            system.facts.pop()
            break
    used = _system_tokens(system, counter)
    summary_truncated = False
    if summary:
        cap = min(available, used + int(budget * policy.summary_share))
        system.summary = summary
        if _system_tokens(system, counter) > cap:
            summary_truncated = True
            # Keep the newest part of the summary: find the longest suffix that fits.
            low, high, best = 0, len(summary), ""
            while low <= high:
                middle = (low + high) // 2
                system.summary = "…" + summary[len(summary) - middle :] if middle else ""
                if _system_tokens(system, counter) <= cap:
                    best, low = system.summary, middle + 1
                else:
                    high = middle - 1
            system.summary = best
    return system, _system_tokens(system, counter), summary_truncated


def summary_limit(
    budget: int, counter: TokenCounter = estimate_tokens, policy: ContextPolicy = DEFAULT_POLICY
) -> int:
    """The most tokens a stored running summary may have so that packets of `budget` carry it whole."""
    framing = message_tokens({"content": SUMMARY_HEADER + "\n"}, counter) + 8  # header, separators, rounding
    return max(0, int(budget * policy.summary_share) - framing)


def build_packet(
    turns: Sequence[Turn],
    *,
    budget: int,
    summary: str = "",
    facts: Sequence[tuple[str, str]] = (),
    counter: TokenCounter = estimate_tokens,
    policy: ContextPolicy = DEFAULT_POLICY,
) -> ContextPacket:
    """Pack a session into at most `budget` tokens (see the module doc for the priorities).

    `facts` are (key, value) pairs in priority order; `turns` oldest first.
    """
    if budget < MIN_BUDGET:
        raise ValueError(f"a context budget must be at least {MIN_BUDGET} tokens (got {budget})")
    units = group_units(turns)
    rendered = [_render(unit) for unit in units]
    sizes = [
        _unit_tokens(unit, messages, counter) if messages else 0
        for unit, messages in zip(units, rendered, strict=True)
    ]
    stored_tokens = sum(t.tokens or turn_tokens(t, counter) for t in turns)
    remaining = budget
    chosen: dict[int, list[dict[str, Any]]] = {}
    latest = _latest_user(units)
    truncated_user = False
    if latest is not None:
        message = rendered[latest][0]
        if sizes[latest] > remaining:
            truncated_user = True
            room = remaining - message_tokens({**message, "content": ""}, counter)
            message = {**message, "content": _fit_prefix(message["content"], room, counter, TRUNCATION_MARK)}
            sizes[latest] = message_tokens(message, counter)
            if sizes[latest] > remaining:  # a counter that is not additive; give up on the text
                message = {**message, "content": ""}
                sizes[latest] = message_tokens(message, counter)
        chosen[latest] = [message]
        remaining -= sizes[latest]

    system, system_tokens, summary_truncated = _pack_system(
        facts, summary, budget=budget, available=remaining, counter=counter, policy=policy
    )
    remaining -= system_tokens

    # Newest first, and contiguous: once a unit does not fit, older ones stay out too, so the
    # model never sees old context while missing what came after it.
    for position in _newest_first(len(units), latest):
        if not rendered[position]:
            continue
        if sizes[position] > remaining:
            break
        chosen[position] = rendered[position]
        remaining -= sizes[position]

    messages = [m for position in sorted(chosen) for m in chosen[position]]
    included = sum(len(units[p].turns) for p in chosen)
    omitted = len(turns) - included
    packet_tokens = budget - remaining
    return ContextPacket(
        system=system.text(),
        messages=messages,
        tokens=packet_tokens,
        budget=budget,
        turns_included=included,
        turns_omitted=omitted,
        facts_included=len(system.facts),
        facts_omitted=len(facts) - len(system.facts),
        summary_included=bool(system.summary),
        summary_truncated=summary_truncated,
        latest_user_truncated=truncated_user,
        needs_compaction=omitted > 0 or stored_tokens > policy.compact_at * budget,
        stored_tokens=stored_tokens,
    )


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """The session after compaction (`keep`) and what the summarizer folds (`fold`), both oldest first.

    Every input turn is either kept (verbose tool errors as a short stub) or
    folded; the latest user turn is always kept unchanged.
    """

    keep: tuple[Turn, ...]
    fold: tuple[Turn, ...]
    tokens_before: int
    tokens_after: int


def _verbose_error(turn: Turn, policy: ContextPolicy) -> bool:
    return (
        turn.role is TurnRole.TOOL
        and turn.is_error
        and not turn.compacted
        and turn.tokens > policy.verbose_error_tokens
    )


def _error_stub(turn: Turn, counter: TokenCounter, policy: ContextPolicy) -> Turn:
    first_line = next((line.strip() for line in turn.content.splitlines() if line.strip()), "")
    if len(first_line) > policy.error_stub_chars:
        first_line = first_line[: policy.error_stub_chars].rstrip()
    return count_turn(replace(turn, content=first_line + ERROR_STUB_SUFFIX, compacted=True), counter)


def plan_compaction(
    turns: Sequence[Turn],
    *,
    budget: int,
    counter: TokenCounter = estimate_tokens,
    policy: ContextPolicy = DEFAULT_POLICY,
) -> CompactionPlan | None:
    """What to fold: the oldest units beyond `keep_share` of the budget and verbose tool errors.

    None when there is nothing to fold. Units stay whole (a tool call is never
    separated from its result); the latest user turn is always kept.
    """
    if budget < MIN_BUDGET:
        raise ValueError(f"a context budget must be at least {MIN_BUDGET} tokens (got {budget})")
    counted = [t if t.tokens else count_turn(t, counter) for t in turns]
    # Verbose errors are stubbed wherever they are kept, so turns are measured as they will be kept.
    shown = [_error_stub(t, counter, policy) if _verbose_error(t, policy) else t for t in counted]
    units = group_units(shown)
    target = int(budget * policy.keep_share)
    latest = _latest_user(units)
    keep_units: set[int] = set()
    used = 0
    if latest is not None:
        keep_units.add(latest)
        used = sum(t.tokens for t in units[latest].turns)
    for position in _newest_first(len(units), latest):
        size = sum(t.tokens for t in units[position].turns)
        if used + size > target:
            break
        keep_units.add(position)
        used += size

    keep: list[Turn] = []
    fold: list[Turn] = []
    for position, unit in enumerate(units):
        for offset, turn in enumerate(unit.turns):
            original = counted[unit.start + offset]
            if position not in keep_units:
                fold.append(original)
            elif turn is not original:  # a stubbed verbose error: its full text is folded
                fold.append(original)
                keep.append(turn)
            else:
                keep.append(turn)
    if not fold:
        return None
    return CompactionPlan(
        keep=tuple(keep),
        fold=tuple(fold),
        tokens_before=sum(t.tokens for t in counted),
        tokens_after=sum(t.tokens for t in keep),
    )

"""Context packets and the compaction policy: examples and properties."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.context import (
    ERROR_STUB_SUFFIX,
    MIN_BUDGET,
    ContextPolicy,
    Turn,
    TurnRole,
    TurnToolCall,
    build_packet,
    count_turn,
    estimate_tokens,
    message_tokens,
    plan_compaction,
)


def word_tokens(text: str) -> int:
    """A tokenizer-like counter (words and punctuation), not additive over concatenation."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def packet_size(packet: Any, counter: Any = estimate_tokens) -> int:
    return sum(message_tokens(m, counter) for m in packet.as_messages())


def exchange(question: str, answer: str, *, tool: str | None = None, call_id: str = "c1") -> list[Turn]:
    turns = [Turn.user(question)]
    if tool:
        turns += [
            Turn.assistant(tool_calls=[TurnToolCall(call_id, tool, '{"order": "A-1"}')]),
            Turn.tool(call_id, tool, '{"status": "shipped"}'),
        ]
    return [*turns, Turn.assistant(answer)]


# --- token estimate ---------------------------------------------------------------


def test_estimate_is_a_quarter_of_ascii_and_one_per_other_character() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    assert estimate_tokens("注文番号") == 4
    assert estimate_tokens("ab注") == 2


def test_messages_are_openai_shaped() -> None:
    call = Turn.assistant(tool_calls=[TurnToolCall("call_1", "crm_get_customer", '{"id": 7}')])
    assert call.to_message() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "crm_get_customer", "arguments": '{"id": 7}'},
            }
        ],
    }
    assert Turn.tool("call_1", "crm_get_customer", "{}").to_message() == {
        "role": "tool",
        "content": "{}",
        "tool_call_id": "call_1",
        "name": "crm_get_customer",
    }
    assert Turn.summary("earlier").to_message() == {"role": "system", "content": "earlier"}
    assert count_turn(Turn.user("hello there")).tokens == message_tokens({"content": "hello there"})


# --- packets ------------------------------------------------------------------------


def test_small_session_fits_whole_with_facts_and_summary() -> None:
    turns = [count_turn(t) for t in exchange("Where is order A-1?", "Shipped.", tool="orders_get")]
    packet = build_packet(
        turns, budget=1000, summary="User asked about refunds before.", facts=[("carrier", "DHL")]
    )
    assert [m["role"] for m in packet.messages] == ["user", "assistant", "tool", "assistant"]
    assert "carrier: DHL" in packet.system and "refunds before" in packet.system
    assert packet.turns_included == 4 and packet.turns_omitted == 0
    assert packet.as_messages()[0] == {"role": "system", "content": packet.system}
    assert packet.tokens == packet_size(packet) <= 1000
    assert not packet.needs_compaction


def test_budget_below_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        build_packet([], budget=MIN_BUDGET - 1)


def test_old_turns_give_way_and_ask_for_compaction() -> None:
    turns = [count_turn(t) for i in range(40) for t in exchange(f"question {i} " * 10, f"answer {i} " * 10)]
    packet = build_packet(turns, budget=300)
    assert packet.tokens <= 300
    assert packet.messages[-1]["content"] == turns[-1].content
    assert packet.turns_omitted > 0 and packet.needs_compaction
    # what is kept is the newest, contiguous part
    kept = [m["content"] for m in packet.messages]
    assert kept == [t.content for t in turns[-len(kept) :]]


def test_latest_user_turn_is_kept_even_when_alone_too_big() -> None:
    turns = [Turn.user("early"), Turn.assistant("ok"), Turn.user("x" * 10_000)]
    packet = build_packet(turns, budget=100)
    assert packet.latest_user_truncated and packet.needs_compaction
    assert packet.messages == [{"role": "user", "content": packet.messages[0]["content"]}]
    assert packet.messages[0]["content"].startswith("xxxx") and packet.messages[0]["content"].endswith("]")
    assert packet.tokens <= 100


def test_tool_results_never_travel_without_their_call() -> None:
    orphan = Turn.tool("gone", "crm_get_customer", "result of a call that was dropped")
    unanswered = Turn.assistant("let me check", tool_calls=[TurnToolCall("c9", "orders_get", "{}")])
    turns = [orphan, Turn.user("hi"), unanswered]
    packet = build_packet(turns, budget=500)
    assert [m["role"] for m in packet.messages] == ["user", "assistant"]
    assert "tool_calls" not in packet.messages[1]  # the call has no result: not sent
    assert packet.turns_omitted == 1


def test_facts_and_summary_stay_within_their_shares() -> None:
    facts = [(f"fact_{i}", "v" * 80) for i in range(50)]
    packet = build_packet([Turn.user("hi")], budget=1000, summary="s" * 10_000, facts=facts)
    assert 0 < packet.facts_included < 50 and packet.facts_omitted == 50 - packet.facts_included
    assert packet.summary_truncated and packet.summary_included
    system_tokens = message_tokens({"content": packet.system})
    assert system_tokens <= 1000 * (0.15 + 0.25) + 1
    assert packet.system.endswith("s")  # the newest part of the summary is kept


# --- properties -------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


@st.composite
def sessions(draw: st.DrawFn) -> list[Turn]:
    """Realistic sessions: user turns, answers, tool calls with (mostly) their results, stray turns."""
    turns: list[Turn] = []
    for index in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["user", "answer", "tools", "orphan", "summary"]))
        if kind == "user":
            turns.append(Turn.user(draw(texts)))
        elif kind == "answer":
            turns.append(Turn.assistant(draw(texts)))
        elif kind == "tools":
            calls = [
                TurnToolCall(f"c{index}-{n}", "orders_get", draw(texts))
                for n in range(draw(st.integers(1, 3)))
            ]
            turns.append(Turn.assistant(draw(texts), tool_calls=calls))
            for call in calls:
                if draw(st.booleans()) or draw(st.booleans()):
                    turns.append(
                        Turn.tool(call.call_id, call.name, draw(texts), is_error=draw(st.booleans()))
                    )
        elif kind == "orphan":
            turns.append(Turn.tool(f"lost-{index}", "orders_get", draw(texts)))
        else:
            turns.append(Turn.summary(draw(texts)))
    return turns


facts_lists = st.lists(st.tuples(st.from_regex(r"[a-z]{1,12}", fullmatch=True), texts), max_size=8)
counters = st.sampled_from([estimate_tokens, word_tokens])


def _latest_user(turns: list[Turn]) -> Turn | None:
    return next((t for t in reversed(turns) if t.role is TurnRole.USER), None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions(), st.integers(MIN_BUDGET, 3000), texts, facts_lists, counters, st.booleans())
def test_packet_never_exceeds_budget_and_keeps_latest_user_turn(
    turns: list[Turn], budget: int, summary: str, facts: list[tuple[str, str]], counter: Any, precount: bool
) -> None:
    if precount:
        turns = [count_turn(t, counter) for t in turns]
    packet = build_packet(turns, budget=budget, summary=summary, facts=facts, counter=counter)
    assert packet.tokens == packet_size(packet, counter) <= budget
    latest = _latest_user(turns)
    if latest is not None:
        users = [m for m in packet.messages if m["role"] == "user"]
        assert users, "the latest user turn is always in the packet"
        content = users[-1]["content"]
        assert content == latest.content or (
            packet.latest_user_truncated and latest.content.startswith(content.removesuffix(" …[truncated]"))
        )
    # every tool result follows an assistant message that made that call
    calls_seen: set[str] = set()
    for message in packet.messages:
        for call in message.get("tool_calls", ()):
            calls_seen.add(call["id"])
        if message["role"] == "tool":
            assert message["tool_call_id"] in calls_seen
    for message in packet.messages:  # and every call sent has its result
        for call in message.get("tool_calls", ()):
            assert any(m.get("tool_call_id") == call["id"] for m in packet.messages)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions(), st.integers(MIN_BUDGET, 3000), counters)
def test_compaction_never_loses_the_latest_user_turn_or_anything_else(
    turns: list[Turn], budget: int, counter: Any
) -> None:
    counted = [count_turn(t, counter) for t in turns]
    plan = plan_compaction(counted, budget=budget, counter=counter)
    if plan is None:
        return
    assert plan.fold, "a plan always folds something"
    latest = _latest_user(counted)
    if latest is not None:
        assert latest in plan.keep
    mandatory = latest.tokens if latest is not None else 0
    assert plan.tokens_after <= max(int(budget * 0.5), mandatory)
    # every turn is kept as it was, kept as a stub whose full text is folded, or folded
    kept_whole = [t for t in plan.keep if not (t.compacted and t.content.endswith(ERROR_STUB_SUFFIX))]
    stubs = [t for t in plan.keep if t not in kept_whole]
    assert len(kept_whole) + len(plan.fold) == len(counted)
    for turn in counted:
        assert turn in kept_whole or turn in plan.fold
    assert all(any(f.tool_call_id == s.tool_call_id and f.is_error for f in plan.fold) for s in stubs)
    # order is preserved and calls stay with their results
    positions = [next(i for i, t in enumerate(counted) if t is kept) for kept in kept_whole]
    assert positions == sorted(positions)
    kept_calls = {c.call_id for t in plan.keep for c in t.tool_calls}
    for turn in plan.keep:
        if turn.role is TurnRole.TOOL and not turn.tool_call_id.startswith("lost-"):
            assert turn.tool_call_id in kept_calls
    assert plan.tokens_after < plan.tokens_before or stubs


def test_compaction_folds_old_units_and_stubs_verbose_errors() -> None:
    old = [count_turn(t) for i in range(20) for t in exchange(f"question {i} " * 20, f"answer {i} " * 20)]
    trace = "PaymentGatewayError: card declined\n" + "  at frame\n" * 200
    recent = [
        count_turn(t)
        for t in [
            Turn.user("refund order A-1"),
            Turn.assistant(tool_calls=[TurnToolCall("c1", "payments_refund", "{}")]),
            Turn.tool("c1", "payments_refund", trace, is_error=True),
        ]
    ]
    plan = plan_compaction(old + recent, budget=2000, policy=ContextPolicy(keep_share=0.5))
    assert plan is not None
    assert plan.keep[-3].content == "refund order A-1"
    stub = plan.keep[-1]
    assert stub.compacted and stub.content == "PaymentGatewayError: card declined" + ERROR_STUB_SUFFIX
    assert plan.fold[-1].content == trace  # the full error goes to the summarizer
    assert plan.fold[0] == old[0]
    assert plan.tokens_after <= 1000


def test_nothing_to_fold_gives_no_plan() -> None:
    assert plan_compaction([count_turn(t) for t in exchange("hi", "hello")], budget=1000) is None
    assert plan_compaction([], budget=1000) is None

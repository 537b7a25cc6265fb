"""ReusedToolTokens: one token per tool and caller while fresh, never across callers or tools."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentmesh.kit.auth import (
    Principal,
    ReusedToolTokens,
    TokenIssuer,
    TokenVerifier,
    TrustedKeys,
    generate_issuer_key,
    reuse,
)

ALICE = Principal(subject="alice", tenant="acme", scopes=frozenset({"payments:refund"}))
BOB = Principal(subject="bob", tenant="acme", scopes=frozenset({"payments:refund"}))


async def test_reused_while_fresh_and_only_for_the_same_call_shape() -> None:
    key = generate_issuer_key()
    tokens = ReusedToolTokens(TokenIssuer([key]), ttl_s=2, reuse_fraction=0.1)
    first = tokens.token(tool="payments_refund", principal=ALICE, scopes={"payments:refund"}, actor="refunds")
    assert first == tokens.token(
        tool="payments_refund", principal=ALICE, scopes={"payments:refund"}, actor="refunds"
    )
    others = {
        tokens.token(tool="payments_charge", principal=ALICE, scopes={"payments:refund"}, actor="refunds"),
        tokens.token(tool="payments_refund", principal=BOB, scopes={"payments:refund"}, actor="refunds"),
        tokens.token(tool="payments_refund", principal=ALICE, scopes=(), actor="refunds"),
        tokens.token(tool="payments_refund", principal=ALICE, scopes={"payments:refund"}, actor="crm"),
    }
    assert first not in others and len(others) == 4
    verified = await TokenVerifier(TrustedKeys(issuer_keys=[key])).verify(
        first, audiences=("payments_refund",)
    )
    assert (verified.subject, verified.scopes, verified.approval) == ("alice", {"payments:refund"}, None)
    assert verified.expires_at - time.time() <= 2
    await asyncio.sleep(0.25)  # past the reuse window (10 % of 2 s): a new token
    assert first != tokens.token(
        tool="payments_refund", principal=ALICE, scopes={"payments:refund"}, actor="refunds"
    )


class _Clock:
    """Stands in for the `time` module of reuse.py: the test moves `now`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


def test_by_default_a_token_is_reused_for_half_its_five_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(reuse, "time", clock)
    tokens = ReusedToolTokens(TokenIssuer([generate_issuer_key()]))  # as the agents build it

    def token() -> str:
        return tokens.token(tool="payments_refund", principal=ALICE, scopes=(), actor="refunds")

    first = token()
    clock.now += 149.5
    assert token() == first
    clock.now += 0.5  # 150 s: half of the token's life is left, a new one is minted
    assert token() != first


def test_the_most_recently_used_tokens_are_kept_up_to_max_entries() -> None:
    tokens = ReusedToolTokens(TokenIssuer([generate_issuer_key()]), max_entries=2)

    def token(tool: str) -> str:
        return tokens.token(tool=tool, principal=ALICE, scopes=(), actor="refunds")

    first = {tool: token(tool) for tool in ("a", "b")}
    assert token("a") == first["a"]  # two fit; `a` used last
    first["c"] = token("c")  # drops `b`, the least recently used
    assert token("c") == first["c"] and token("a") == first["a"] and token("b") != first["b"]

"""ReusedToolTokens: one token per tool and caller while fresh, never across callers or tools."""

from __future__ import annotations

import asyncio
import time

from agentmesh.kit.auth import (
    Principal,
    ReusedToolTokens,
    TokenIssuer,
    TokenVerifier,
    TrustedKeys,
    generate_issuer_key,
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

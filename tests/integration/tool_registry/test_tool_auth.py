"""The tool SDK verifies tool tokens and approval claims (issue "Security", items 3 and 5b).

The payments example tool on the SDK with authentication on (a real signing key), called
through the real invoker with real tokens: `aud` must be the called tool, the token must
carry its scope, and a refund above the approval limit runs only with an approval claim
bound to this task step and these very arguments. The ledger (the tool's state) shows
that nothing refused ever paid.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentmesh.kit.auth import (
    Approval,
    Principal,
    TokenIssuer,
    arguments_digest,
    generate_issuer_key,
)
from agentmesh.v1 import tool_pb2
from examples import payments
from tests.integration.tool_registry.tools_support import Served, served
from tool_registry.invoke import CallContext, CallOutcome, ToolInvoker, ToolResult

pytestmark = pytest.mark.integration

ALICE = Principal(subject="alice", tenant="acme", scopes=frozenset({"payments:refund", "payments:read"}))
CHARGE = "ch_ORD-12346"  # 250.00 captured; the example's approval limit is 100.00


@dataclass
class Secured:
    tools: Served
    issuer: TokenIssuer

    def token(self, tool: str, scopes: tuple[str, ...] = ("payments:refund",), **claims: Any) -> str:
        return self.issuer.tool_token(tool=tool, principal=ALICE, scopes=scopes, actor="refunds", **claims)

    def minter(
        self, *, approve: bool = True, digest_of: dict[str, Any] | None = None, step: int | None = None
    ) -> Callable[[tool_pb2.ToolSpec, Any], str]:
        """What the agent does: mint per call, the approval bound to the request it sends."""

        def mint(spec: tool_pb2.ToolSpec, request: Any) -> str:
            bound = request
            if digest_of is not None:
                bound = type(request)(**digest_of)
            approval = Approval("act-1", "task-1", step or 7, arguments_digest(bound), "bob")
            return self.token(spec.name, task_id="task-1", step=7, approval=approval if approve else None)

        return mint

    async def refund(self, amount: int, call: CallContext) -> ToolResult:
        arguments = {"charge_id": CHARGE, "amount_cents": amount, "reason": "damaged"}
        return await ToolInvoker().invoke(self.tools.tool("Refund"), arguments, call)

    def refunded(self) -> int:
        return int(self.tools.state[CHARGE]["refunded_cents"])


@pytest.fixture
async def secured(redis_url: str, tmp_path: Path) -> AsyncIterator[Secured]:
    key = generate_issuer_key()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(key.pem())
    async with served(payments.build(), redis_url, signing_key=key_file) as tools:
        yield Secured(tools, TokenIssuer([key]))


def call(step: int = 7, **fields: Any) -> CallContext:
    return CallContext(task_id="task-1", step=step, deadline=time.time() + 10, **fields)


async def test_tool_tokens_must_be_for_this_tool_with_its_scope(secured: Secured) -> None:
    no_token = await secured.refund(500, call())
    assert (no_token.outcome, no_token.status_code) == (CallOutcome.DENIED, "UNAUTHENTICATED")
    # A token minted for another tool (replayed from a payments_charge call).
    other_tool = await secured.refund(500, call(token=secured.token("payments_charge")))
    assert other_tool.status_code == "UNAUTHENTICATED" and "audience" in other_tool.observation
    # A token for this tool without its scope.
    unscoped = await secured.refund(500, call(token=secured.token("payments_refund", ("payments:read",))))
    assert unscoped.status_code == "PERMISSION_DENIED" and "payments:refund" in unscoped.observation
    # A token signed by a key the mesh does not trust.
    forged = TokenIssuer([generate_issuer_key()]).tool_token(
        tool="payments_refund", principal=ALICE, scopes=("payments:refund",), actor="refunds"
    )
    assert (await secured.refund(500, call(token=forged))).status_code == "UNAUTHENTICATED"
    assert secured.refunded() == 0
    ok = await secured.refund(500, call(token=secured.token("payments_refund")))
    assert ok.outcome is CallOutcome.OK and ok.response is not None
    assert not ok.response["refund"].get("approved") and secured.refunded() == 500


async def test_an_approval_is_honoured_only_for_its_own_call(secured: Secured) -> None:
    # Above the limit without an approval: the tool asks for one, nothing is paid.
    unapproved = await secured.refund(12_000, call(mint=secured.minter(approve=False)))
    assert unapproved.outcome is CallOutcome.AWAITING_APPROVAL and secured.refunded() == 0
    # An approval granted for other arguments (100 cents), replayed on a 12 000 cent refund.
    other_args = secured.minter(digest_of={"charge_id": CHARGE, "amount_cents": 100, "reason": "damaged"})
    result = await secured.refund(12_000, call(mint=other_args))
    assert result.status_code == "PERMISSION_DENIED" and "other arguments" in result.observation
    # An approval for another step of the task.
    result = await secured.refund(12_000, call(mint=secured.minter(step=8)))
    assert result.status_code == "PERMISSION_DENIED" and "another task step" in result.observation
    # A header naming an approval is no approval when a token is checked.
    header = await secured.refund(
        12_000,
        call(mint=secured.minter(approve=False), metadata=(("x-agentmesh-approval", "act-1"),)),
    )
    assert header.outcome is CallOutcome.AWAITING_APPROVAL
    assert secured.refunded() == 0
    # The approval bound to this call: paid, once.
    approved = await secured.refund(12_000, call(mint=secured.minter()))
    assert approved.outcome is CallOutcome.OK and approved.response is not None
    assert approved.response["refund"]["approved"] is True and secured.refunded() == 12_000
    # The same approved token replayed: under its own idempotency key it is deduplicated,
    # under any other key refused. It never pays twice.
    token = secured.minter()(secured.tools.tool("Refund").spec, _request(secured, 12_000))
    replay = await secured.refund(12_000, call(token=token))
    assert replay.outcome is CallOutcome.DEDUPLICATED
    elsewhere = await secured.refund(12_000, call(step=9, token=token))
    assert elsewhere.status_code == "PERMISSION_DENIED" and "idempotency key" in elsewhere.observation
    assert secured.refunded() == 12_000


def _request(secured: Secured, amount: int) -> Any:
    message = secured.tools.app.message("payments.v1.RefundRequest")
    return message(charge_id=CHARGE, amount_cents=amount, reason="damaged")

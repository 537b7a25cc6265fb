"""Payments example tool: charges and refunds, with a dynamic approval limit.

Refund is KEYED (the SDK deduplicates on the idempotency key, so a retried
refund never pays twice) and needs `payments:refund`. A refund above the
approval limit (`--approval-limit-cents` or PAYMENTS_APPROVAL_LIMIT_CENTS,
default 10000 = 100.00) is refused with FAILED_PRECONDITION, reason
APPROVAL_REQUIRED, unless the SDK verified an approval bound to this very
call (`context.approval`: the tool token's `approval` claim for this task
step and these arguments): the runtime parks the task, and after ResumeTask
approves, calls again with a token carrying the approval (docs/decisions.md,
"Dynamic approval"). The body never reads approval headers itself.
"""

from __future__ import annotations

import argparse
from typing import Any

from agentmesh.kit.config import Settings
from agentmesh.kit.errors import FailedPrecondition, NotFound
from agentmesh.v1 import errors_pb2
from examples._common import load, settings_for
from tool_registry.sdk import ToolContext, ToolService

DEFAULT_APPROVAL_LIMIT_CENTS = 10_000


def _seed() -> dict[str, dict[str, Any]]:
    return {
        f"ch_{order}": {
            "charge_id": f"ch_{order}",
            "order_id": order,
            "amount_cents": amount,
            "currency": "USD",
            "refunded_cents": 0,
            "refunds": [],
        }
        for order, amount in (("ORD-12345", 4900), ("ORD-12346", 25000), ("ORD-20001", 5890))
    }


def build(approval_limit_cents: int | None = None) -> ToolService:
    limit = approval_limit_cents
    if limit is None:
        configured = Settings.from_env().payments_approval_limit_cents
        limit = DEFAULT_APPROVAL_LIMIT_CENTS if configured is None else configured
    charges = _seed()
    app = load("payments")
    app.state = charges  # type: ignore[attr-defined]  # inspectable in tests

    def find(charge_id: str) -> dict[str, Any]:
        charge = charges.get(charge_id)
        if charge is None:
            raise NotFound(f"charge {charge_id!r} not found", reason=errors_pb2.ERROR_REASON_UNSPECIFIED)
        return charge

    @app.method("CreateCharge")
    async def charge(request: Any, context: ToolContext) -> dict[str, Any]:
        charge_id = f"ch_{request.order_id}"
        if charge_id in charges:
            raise FailedPrecondition(f"order {request.order_id} is already charged ({charge_id})")
        charges[charge_id] = {
            "charge_id": charge_id,
            "order_id": request.order_id,
            "amount_cents": request.amount_cents,
            "currency": request.currency,
            "refunded_cents": 0,
            "refunds": [],
        }
        return charges[charge_id]

    @app.method("Refund")
    async def refund(request: Any, context: ToolContext) -> dict[str, Any]:
        found = find(request.charge_id)
        left = found["amount_cents"] - found["refunded_cents"]
        if request.amount_cents > left:
            raise FailedPrecondition(
                f"only {left} cents of {request.charge_id} are left to refund",
                metadata={"refundable_cents": str(left)},
            )
        if request.amount_cents > limit and context.approval is None:
            raise FailedPrecondition(
                f"a refund of {request.amount_cents} cents is above the approval limit of {limit} cents",
                reason=errors_pb2.ERROR_REASON_APPROVAL_REQUIRED,
                metadata={"amount_cents": str(request.amount_cents), "limit_cents": str(limit)},
            )
        entry = {
            "refund_id": f"rf_{len(found['refunds']) + 1}_{request.charge_id}",
            "amount_cents": request.amount_cents,
            "reason": request.reason,
            "approved": context.approval is not None,
        }
        found["refunds"].append(entry)
        found["refunded_cents"] += request.amount_cents
        return {"refund": entry, "charge": found}

    @app.method("GetCharge")
    async def get_charge(request: Any, context: ToolContext) -> dict[str, Any]:
        return find(request.charge_id)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="examples.payments")
    parser.add_argument("--approval-limit-cents", type=int, default=None)
    args = parser.parse_args([] if argv is None else argv)  # `agentmesh serve tool` passes none
    build(args.approval_limit_cents).run(settings_for("payments"))

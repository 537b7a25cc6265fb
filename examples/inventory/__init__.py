"""Inventory example tool: stock levels and reservations (Reserve, Release, ReleaseReserved are KEYED).

The ledger is `app.state["reservations"]`: every reservation ever made, in order, each
with `released` once Release gave its units back (a released reservation stays in the
ledger, so a compensation is visible, never erased). ReleaseReserved finds a reservation by the
idempotency key its Reserve call carried: the compensation of a Reserve whose outcome is unknown
(docs/compensation.md, "In-doubt calls"). The seeded stock can be replaced with
`--stock SKU=N,SKU=N` or INVENTORY_STOCK (the chaos and soak runs reserve thousands of items).
"""

from __future__ import annotations

import argparse
from typing import Any

from agentmesh.kit.config import Settings
from agentmesh.kit.errors import FailedPrecondition, NotFound
from agentmesh.v1 import errors_pb2
from examples._common import load, settings_for
from tool_registry.sdk import ToolContext, ToolService

SEED_STOCK = {"ABC-001": 10, "DEF-002": 3, "XYZ-900": 0}


def parse_stock(text: str) -> dict[str, int]:
    """`ABC-001=500,DEF-002=3` → {"ABC-001": 500, "DEF-002": 3}; ValueError naming a bad item."""
    stock: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        sku, _, count = item.partition("=")
        if not sku or not count.isdigit():
            raise ValueError(f"stock item {item!r} is not SKU=COUNT")
        stock[sku] = int(count)
    return stock


def build(stock: dict[str, int] | None = None) -> ToolService:
    stock = dict(SEED_STOCK if stock is None else stock)
    reservations: list[dict[str, Any]] = []
    by_key: dict[str, dict[str, Any]] = {}  # Reserve's idempotency key -> its reservation
    app = load("inventory")
    app.state = {"stock": stock, "reservations": reservations}  # type: ignore[attr-defined]

    def reserved(sku: str) -> int:
        return sum(r["qty"] for r in reservations if r["sku"] == sku and not r["released"])

    @app.method("CheckStock")
    async def check(request: Any, context: ToolContext) -> dict[str, Any]:
        if request.sku not in stock:
            raise NotFound(f"unknown SKU {request.sku!r}", reason=errors_pb2.ERROR_REASON_UNSPECIFIED)
        return {"sku": request.sku, "available": stock[request.sku], "reserved": reserved(request.sku)}

    @app.method("Reserve")
    async def reserve(request: Any, context: ToolContext) -> dict[str, Any]:
        if request.sku not in stock:
            raise NotFound(f"unknown SKU {request.sku!r}", reason=errors_pb2.ERROR_REASON_UNSPECIFIED)
        if stock[request.sku] < request.qty:
            raise FailedPrecondition(
                f"only {stock[request.sku]} of {request.sku} available",
                metadata={"available": str(stock[request.sku])},
            )
        stock[request.sku] -= request.qty
        entry = {
            "reservation_id": f"res_{len(reservations) + 1}",
            "order_id": request.order_id,
            "sku": request.sku,
            "qty": request.qty,
            "released": False,
        }
        reservations.append(entry)
        if context.idempotency_key:
            by_key[context.idempotency_key] = entry
        return dict(entry)

    def give_back(found: dict[str, Any]) -> dict[str, Any]:
        if not found["released"]:
            stock[found["sku"]] += found["qty"]
            found["released"] = True
        return dict(found)

    @app.method("Release")
    async def release(request: Any, context: ToolContext) -> dict[str, Any]:
        found = next((r for r in reservations if r["reservation_id"] == request.reservation_id), None)
        if found is None:
            raise NotFound(
                f"unknown reservation {request.reservation_id!r}", reason=errors_pb2.ERROR_REASON_UNSPECIFIED
            )
        return give_back(found)

    @app.method("ReleaseReserved")
    async def release_reserved(request: Any, context: ToolContext) -> dict[str, Any]:
        found = by_key.get(request.reserve_key)
        if found is None:  # that Reserve never ran (or reserved nothing): nothing to undo
            return {"found": False}
        return {"found": True, "reservation": give_back(found)}

    @app.method("ListReservations")
    async def list_reservations(request: Any, context: ToolContext) -> dict[str, Any]:
        return {"reservations": [dict(r) for r in reservations if r["order_id"] == request.order_id]}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="examples.inventory")
    parser.add_argument(
        "--stock", default=Settings.from_env().inventory_stock, help="SKU=COUNT,... instead of the seed"
    )
    args = parser.parse_args([] if argv is None else argv)  # `agentmesh serve tool` passes none
    try:
        stock = parse_stock(args.stock) if args.stock else None
    except ValueError as exc:
        parser.error(str(exc))
    build(stock).run(settings_for("inventory"))

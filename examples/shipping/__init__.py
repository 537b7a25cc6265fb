"""Shipping example tool: creates shipments (KEYED) and looks them up."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from examples._common import load, settings_for
from tool_registry.sdk import ToolContext, ToolService


def build() -> ToolService:
    shipments: list[dict[str, Any]] = []
    app = load("shipping")
    app.state = shipments  # type: ignore[attr-defined]

    @app.method("CreateShipment")
    async def create(request: Any, context: ToolContext) -> dict[str, Any]:
        number = len(shipments) + 1
        shipment = {
            "shipment_id": f"shp_{number}",
            "order_id": request.order_id,
            "tracking_number": f"1Z{number:010d}",
            "address": json_format.MessageToDict(request.address, preserving_proto_field_name=True),
            "speed": json_format.MessageToDict(request, preserving_proto_field_name=True).get(
                "speed", "SPEED_UNSPECIFIED"
            ),
        }
        shipments.append(shipment)
        return shipment

    @app.method("GetShipments")
    async def get(request: Any, context: ToolContext) -> dict[str, Any]:
        found = [
            s
            for s in shipments
            if (request.shipment_id and s["shipment_id"] == request.shipment_id)
            or (request.order_id and s["order_id"] == request.order_id)
        ]
        return {"shipments": found}

    return app


def main() -> None:
    build().run(settings_for("shipping"))

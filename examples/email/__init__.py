"""Email example tool: sends (records in an outbox) and lists the outbox."""

from __future__ import annotations

from typing import Any

from examples._common import load, settings_for
from tool_registry.sdk import ToolContext, ToolService


def build() -> ToolService:
    outbox: list[dict[str, Any]] = []
    app = load("email")
    app.state = outbox  # type: ignore[attr-defined]

    @app.method("Send")
    async def send(request: Any, context: ToolContext) -> dict[str, Any]:
        message = {
            "message_id": f"msg_{len(outbox) + 1}",
            "to": request.to,
            "subject": request.subject,
            "body": request.body,
        }
        outbox.append(message)
        return {"message_id": message["message_id"]}

    @app.method("ListOutbox")
    async def list_outbox(request: Any, context: ToolContext) -> dict[str, Any]:
        return {"messages": [m for m in outbox if not request.to or m["to"] == request.to]}

    return app


def main() -> None:
    build().run(settings_for("email"))

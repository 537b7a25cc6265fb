"""The scripted model server: an OpenAI-compatible HTTP API driven by a script.

    AGENTMESH_ROLE=model AGENTMESH_MODEL_SCRIPT=agents/scripts/fulfillment.yaml agentmesh serve

Used by the tests, the benchmarks and the offline demo instead of a real
language model. It answers `POST /v1/chat/completions` (tools, tool_calls,
usage) by the first rule of its script that matches the conversation (see
`agents.model.script`), and `GET /v1/models`, `GET /healthz`, `GET /metrics`.
Every answer says it is scripted: the model is `scripted:<script name>`, the
`system_fingerprint` is `scripted`, the body carries `agentmesh_scripted`
(script and rule) and the response the header `x-agentmesh-scripted`.

Script: AGENTMESH_MODEL_SCRIPT, or the packaged demo script
(agents/scripts/demo.yaml: the refund, fulfillment and delegation stories).

Port: it serves HTTP only, on AGENTMESH_HTTP_PORT when set, else on
AGENTMESH_GRPC_PORT, else on the role's default 50099 (the DESIGN.md local
port of the scripted model); 0 picks a free port (logged as `http_port`).
It runs on the one bootstrap, `ServiceHost` (agentmesh/kit/server.py) in its
HTTP-only form, like every other `serve` role.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentmesh.kit import metrics
from agentmesh.kit.config import Role, Settings
from agentmesh.kit.process import load_settings, run_process
from agentmesh.kit.server import ServiceHost, http_only_port
from agents.model.script import Conversation, Script, ScriptError, load_script, respond
from agents.model.wire import SCRIPTED_HEADER, message_from_wire

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8 * 1024 * 1024
STOP_GRACE_S = 1.0  # in-flight answers (a scripted delay) get this long when a test's server stops


def listen_port(settings: Settings) -> int:
    """The HTTP port of the model role (see the module docstring)."""
    return http_only_port(settings)


class ScriptedModelServer:
    """`settings` (the model role's) when served as a process; else `host`/`port` (tests, benches)."""

    def __init__(
        self, script: Script, host: str = "127.0.0.1", port: int = 0, *, settings: Settings | None = None
    ) -> None:
        self.script = script
        self._fired: Counter[int] = Counter()
        self._lock = asyncio.Lock()
        self.requests = 0
        self.port: int | None = None
        if settings is None:
            settings = Settings.from_env(
                {}, role=Role.MODEL, bind_host=host, http_port=port, drain_grace_s=STOP_GRACE_S
            )
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/chat/completions", self._complete)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self.host = ServiceHost(settings, name="model", http_only=True, http_app=app)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> int:
        await self.host.start()
        assert self.host.http_port is not None
        self.port = self.host.http_port
        return self.port

    async def stop(self) -> None:
        await self.host.stop()

    async def __aenter__(self) -> ScriptedModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _headers(self) -> dict[str, str]:
        return {SCRIPTED_HEADER: self.script.name}

    def _error(self, status: int, message: str) -> web.Response:
        body = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
        return web.json_response(body, status=status, headers=self._headers())

    async def _complete(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "request body is not JSON")
        if not isinstance(payload, dict):
            return self._error(400, "request body must be a JSON object")
        raw_messages = payload.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            return self._error(400, "messages must be a non-empty list")
        try:
            messages = [message_from_wire(raw, index) for index, raw in enumerate(raw_messages)]
        except ValueError as exc:
            return self._error(400, str(exc))
        tools = payload.get("tools") or []
        offered = frozenset(
            str(tool.get("function", {}).get("name", ""))
            for tool in tools
            if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
        )
        convo = Conversation(
            messages=messages,
            tools_offered=offered,
            headers={name.lower(): value for name, value in request.headers.items()},
            model=str(payload.get("model") or ""),
            structured=isinstance(payload.get("response_format"), dict),
        )
        prompt_text = json.dumps(raw_messages) + (json.dumps(tools) if tools else "")
        async with self._lock:  # `times` counters must not race
            reply = respond(
                self.script, convo, self._fired, prompt_text=prompt_text, created=int(time.time())
            )
            if reply.rule is not None:
                self._fired[reply.rule] += 1
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = self._headers()
        if reply.retry_after is not None:
            headers["retry-after"] = f"{reply.retry_after:g}"
        return web.json_response(reply.body, status=reply.status, headers=headers)

    async def _models(self, _: web.Request) -> web.Response:
        body: dict[str, Any] = {
            "object": "list",
            "data": [{"id": self.script.model_id, "object": "model", "owned_by": "agentmesh-scripted"}],
        }
        return web.json_response(body, headers=self._headers())

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers=self._headers())

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


DEMO_SCRIPT = Path(__file__).resolve().parent / "scripts" / "demo.yaml"


async def serve(settings: Settings) -> None:
    script = load_script(settings.model_script or DEMO_SCRIPT)
    server = ScriptedModelServer(script, settings=settings)

    async def announce() -> None:
        log.info(
            "serving scripted model",
            extra={
                "http_port": server.host.http_port,
                "script": script.name,
                "model": script.model_id,
                "scripted": True,
            },
        )

    server.host.on_start(announce)
    await server.host.run()  # serves until SIGTERM/SIGINT, then drains and stops


def main() -> None:
    settings = load_settings(Role.MODEL)
    # A bad script is a start-up failure with a clear message (exit 2).
    run_process(settings, "model", lambda: serve(settings), fatal=(ScriptError,))


if __name__ == "__main__":
    main()

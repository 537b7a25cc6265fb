"""ServiceHost in its HTTP-only form (the scripted model, the console): one bootstrap for every role."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from agentmesh.kit.config import Role
from agentmesh.kit.server import ServiceHost, http_only_port
from agentmesh.kit.testing import local_settings
from agents.model.script import Script
from agents.scripted_model import ScriptedModelServer

pytestmark = pytest.mark.integration


async def test_the_application_keeps_its_routes_and_gets_the_standard_ones() -> None:
    async def own_health(_: web.Request) -> web.Response:
        return web.Response(text="mine\n")

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello\n")

    app = web.Application()
    app.router.add_get("/healthz", own_health)
    app.router.add_get("/hello", hello)
    stopped: list[str] = []
    host = ServiceHost(local_settings(role=Role.CONSOLE), http_only=True, http_app=app)

    async def on_stop() -> None:
        stopped.append("stop")

    host.on_stop(on_stop)
    await host.start()
    assert host.grpc_port is None and host.http_port
    base = f"http://127.0.0.1:{host.http_port}"
    async with aiohttp.ClientSession() as http:
        answers = {}
        for path in ("/hello", "/healthz", "/readyz", "/metrics"):
            async with http.get(base + path) as response:
                answers[path] = (response.status, await response.text())
        await host.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(base + "/hello"):
                pass
    assert answers["/hello"] == (200, "hello\n") and answers["/healthz"] == (200, "mine\n")
    assert answers["/readyz"] == (200, "SERVING\n")
    assert answers["/metrics"][0] == 200 and "agentmesh_" in answers["/metrics"][1]
    assert stopped == ["stop"]


def test_an_http_only_role_listens_on_its_own_port() -> None:
    assert http_only_port(local_settings(role=Role.MODEL, http_port=None, grpc_port=None)) == 50099
    assert http_only_port(local_settings(role=Role.MODEL, http_port=None, grpc_port=7)) == 7
    assert http_only_port(local_settings(role=Role.CONSOLE, http_port=8, grpc_port=7)) == 8


async def test_the_scripted_model_runs_on_the_one_bootstrap() -> None:
    script = Script.model_validate({"name": "boot", "rules": [{"then": {"answer": "hi"}}]})
    async with ScriptedModelServer(script) as server:
        assert server.host.http_only and server.port == server.host.http_port
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.port}/metrics") as metrics:
                assert metrics.status == 200
            async with http.get(f"http://127.0.0.1:{server.port}/readyz") as ready:
                # the model's own readiness answer (labelled scripted), not the kit's
                assert ready.status == 200 and ready.headers["x-agentmesh-scripted"] == "boot"


async def test_the_console_runs_on_the_one_bootstrap() -> None:
    from agentmesh.console.server import console_host

    host = console_host(local_settings(role=Role.CONSOLE, registry="127.0.0.1:1"))
    await host.start()
    try:
        assert host.http_only and host.http_port
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{host.http_port}"
            async with http.get(f"{base}/healthz") as health:
                assert health.status == 200
            async with http.get(f"{base}/signin") as signin:
                assert signin.status == 200 and "csrf" in await signin.text()
            async with http.get(f"{base}/tasks", allow_redirects=False) as tasks:
                assert tasks.status == 303 and tasks.headers["location"] == "/signin"
    finally:
        await host.stop()
    assert not host.is_serving()

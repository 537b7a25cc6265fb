"""The OpenAI-compatible client against the scripted model server, over real HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agentmesh.kit.net import free_port
from agents.model.openai import OpenAICompatibleModel, parse_retry_after
from agents.model.script import Script
from agents.model.types import (
    ChatMessage,
    ChatRequest,
    ChatRole,
    MalformedResponse,
    ModelRejected,
    ModelUnavailable,
)
from agents.scripted_model import ScriptedModelServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]

SCRIPT: dict[str, Any] = {
    "name": "client-test",
    "rules": [
        {"when": {"last_user": "^flaky"}, "times": 2, "then": {"status": 503, "retry_after": 0.05}},
        {"when": {"last_user": "^throttled"}, "then": {"status": 429, "retry_after": 0.05}},
        {"when": {"last_user": "^forbidden"}, "then": {"status": 403}},
        {"when": {"last_user": "^empty"}, "then": {"empty": True}},
        {"when": {"last_user": "^slow"}, "then": {"answer": "late", "delay": 5}},
        {"when": {"header": {"x-agentmesh-domain": "fulfillment"}}, "then": {"answer": "hello fulfillment"}},
        {
            "when": {"last_user": r"reserve (?P<n>\d+)", "tools_offered": ["inventory_reserve"]},
            "then": {
                "tool_calls": [
                    {"name": "inventory_reserve", "arguments": {"quantity": "{{ match.n | int }}"}}
                ],
                "usage": {"prompt_tokens": 42, "completion_tokens": 7},
            },
        },
    ],
    "default": {"answer": "ok"},
}
TOOLS = [{"type": "function", "function": {"name": "inventory_reserve", "parameters": {"type": "object"}}}]


@pytest.fixture
async def server() -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer(Script.model_validate(SCRIPT)) as running:
        yield running


@pytest.fixture
async def model(server: ScriptedModelServer) -> AsyncIterator[OpenAICompatibleModel]:
    client = OpenAICompatibleModel(server.base_url, "gpt-test", api_key="k", max_retries=3)
    yield client
    await client.aclose()


def ask(text: str, **kwargs: Any) -> ChatRequest:
    return ChatRequest([ChatMessage(ChatRole.SYSTEM, "sys"), ChatMessage(ChatRole.USER, text)], **kwargs)


async def test_tool_call_with_usage_and_scripted_label(model: OpenAICompatibleModel) -> None:
    turn = await model.complete(ask("please reserve 3", tools=TOOLS), timeout=10)
    assert turn.tool_calls[0].name == "inventory_reserve" and turn.tool_calls[0].arguments == {"quantity": 3}
    assert (turn.usage.prompt_tokens, turn.usage.completion_tokens) == (42, 7)
    assert turn.scripted and turn.model == "scripted:client-test"


async def test_request_headers_reach_the_script(model: OpenAICompatibleModel) -> None:
    turn = await model.complete(ask("hi", headers={"x-agentmesh-domain": "fulfillment"}), timeout=10)
    assert turn.content == "hello fulfillment"


async def test_5xx_is_retried_honouring_retry_after(
    model: OpenAICompatibleModel, server: ScriptedModelServer
) -> None:
    turn = await model.complete(ask("flaky"), timeout=10)
    assert turn.content == "ok" and server.requests == 3


async def test_429_until_the_last_attempt_is_unavailable(
    model: OpenAICompatibleModel, server: ScriptedModelServer
) -> None:
    with pytest.raises(ModelUnavailable, match="after 3 attempt") as caught:
        await model.complete(ask("throttled"), timeout=10)
    assert caught.value.status == 429 and server.requests == 3


async def test_4xx_is_not_retried(model: OpenAICompatibleModel, server: ScriptedModelServer) -> None:
    with pytest.raises(ModelRejected, match="HTTP 403") as caught:
        await model.complete(ask("forbidden"), timeout=10)
    assert caught.value.status == 403 and server.requests == 1


async def test_empty_choices_are_malformed(model: OpenAICompatibleModel) -> None:
    with pytest.raises(MalformedResponse, match="no choices"):
        await model.complete(ask("empty"), timeout=10)


async def test_timeout_is_bounded_by_the_caller(model: OpenAICompatibleModel) -> None:
    started = time.monotonic()
    with pytest.raises(ModelUnavailable):
        await model.complete(ask("slow"), timeout=0.5)
    assert time.monotonic() - started < 4


async def test_refused_connection_is_unavailable_not_a_hang() -> None:
    client = OpenAICompatibleModel(f"http://127.0.0.1:{free_port()}/v1", "m", max_retries=2)
    try:
        with pytest.raises(ModelUnavailable, match="unavailable after 2 attempt"):
            await asyncio.wait_for(client.complete(ask("hi"), timeout=5), 10)
    finally:
        await client.aclose()


async def test_models_and_health_endpoints_are_labelled(server: ScriptedModelServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/models") as models:
            listed = await models.json()
        async with http.get(f"http://127.0.0.1:{server.port}/healthz") as health:
            pass
        async with http.post(f"{server.base_url}/chat/completions", data=b"{not json") as bad:
            pass
        async with http.post(f"{server.base_url}/chat/completions", json={"messages": []}) as no_messages:
            pass
    assert listed["data"][0]["id"] == "scripted:client-test"
    assert models.headers["x-agentmesh-scripted"] == "client-test"
    assert health.status == 200 and health.headers["x-agentmesh-scripted"] == "client-test"
    assert bad.status == 400 and no_messages.status == 400


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.fixture
def model_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    script = tmp_path / "demo.yaml"
    script.write_text(yaml.safe_dump({"rules": [{"then": {"answer": "from a process"}}]}))
    port = free_port()
    env = {
        **os.environ,
        "AGENTMESH_MODEL_SCRIPT": str(script),
        "AGENTMESH_GRPC_PORT": str(port),
        "AGENTMESH_BIND_HOST": "127.0.0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "agentmesh", "serve", "model"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait()


async def test_serve_model_role_as_a_process(model_process: tuple[subprocess.Popen[bytes], int]) -> None:
    process, port = model_process
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert process.poll() is None, "the scripted model exited"
            assert time.monotonic() < deadline, "the scripted model did not come up"
            await asyncio.sleep(0.05)
    client = OpenAICompatibleModel(f"http://127.0.0.1:{port}/v1", "any")
    try:
        turn = await client.complete(ask("hi"), timeout=10)
    finally:
        await client.aclose()
    assert turn.content == "from a process" and turn.model == "scripted:demo" and turn.scripted
    process.terminate()
    assert await asyncio.to_thread(process.wait, 15) == 0


def test_bad_script_fails_the_process_with_a_clear_message(tmp_path: Path) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text("rules: [{then: {}}]\n")
    env = {**os.environ, "AGENTMESH_MODEL_SCRIPT": str(script), "AGENTMESH_GRPC_PORT": "0"}
    argv = [sys.executable, "-m", "agentmesh", "serve", "model"]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"invalid model script" in done.stderr and b"exactly one" in done.stderr

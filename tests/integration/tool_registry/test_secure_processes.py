"""The registry and an example tool as real processes with authentication on (issue "Security").

The registry holds the signing key and serves the mesh JWKS; the payments tool
verifies tool tokens against that URL and registers itself with its service token,
so it owns its tool names; an anonymous RegisterTool is refused and the binding stays.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentmesh.kit.auth import Principal, TokenIssuer, generate_issuer_key
from agentmesh.kit.channels import create_channel
from agentmesh.kit.net import free_port_with_partner
from agentmesh.localmesh.proc import ServiceProcess
from agentmesh.v1 import tool_pb2, tool_registry_service_pb2_grpc
from agentmesh.v1 import tool_registry_service_pb2 as rs
from examples._common import load
from memory.connection import create_redis
from tool_registry.invoke import CallContext, CallOutcome, ResolvedTool, ToolInvoker
from tool_registry.registration import prepare

pytestmark = pytest.mark.integration

AGENTMESH = str(Path(sys.executable).parent / "agentmesh")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
BEARER = re.compile(r"Bearer [A-Za-z0-9_-]{8,}")
# Everything a process may say goes to its log: DEBUG logs as JSON, spans on the console.
SCRAPED = {"AGENTMESH_LOG_FORMAT": "json", "AGENTMESH_LOG_LEVEL": "DEBUG", "OTEL_TRACES_EXPORTER": "console"}


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


async def test_registry_and_tool_processes_with_auth_on(
    service_process: Callable[..., ServiceProcess], redis_url: str, tmp_path: Path
) -> None:
    key = generate_issuer_key()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(key.pem())
    issuer = TokenIssuer([key])
    service_token = issuer.service_token("payments")
    tokens = [service_token]  # every token sent in this test: none may show up anywhere
    port = free_port_with_partner(1000)
    registry = service_process(
        "registry",
        [AGENTMESH, "serve", "registry"],
        port,
        env={
            "REDIS_URL": redis_url,
            "AGENTMESH_GRPC_PORT": str(port),
            "AGENTMESH_SIGNING_KEY": str(key_file),
            "AGENTMESH_BIND_HOST": "127.0.0.1",
            **SCRAPED,
        },
    )
    await registry.wait_serving(60)
    jwks_url = f"http://127.0.0.1:{port + 1000}/.well-known/jwks.json"
    document = await asyncio.to_thread(_get_json, jwks_url)
    assert document == {"keys": [key.public()]} and "d" not in document["keys"][0]

    tool_port = free_port_with_partner(1000)
    payments = service_process(
        "payments",
        [AGENTMESH, "serve", "tool"],
        tool_port,
        env={
            "AGENTMESH_TOOL": "payments",
            "AGENTMESH_GRPC_PORT": str(tool_port),
            "AGENTMESH_ADVERTISE_ADDR": f"127.0.0.1:{tool_port}",
            "AGENTMESH_REGISTRY": f"127.0.0.1:{port}",
            "AGENTMESH_JWKS": jwks_url,
            "AGENTMESH_SERVICE_TOKEN": service_token,
            "REDIS_URL": redis_url,
            "AGENTMESH_BIND_HOST": "127.0.0.1",
            **SCRAPED,
        },
        health_service="payments.v1.Payments",
    )
    await payments.wait_serving(60)
    tokens.append(issuer.user_token(user="alice", tenant="acme"))
    reader = (("authorization", f"Bearer {tokens[-1]}"),)
    async with create_channel(registry.target) as channel:
        stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
        deadline = time.monotonic() + 30
        while True:  # the tool registers itself in the background
            try:
                spec = await stub.GetTool(rs.GetToolRequest(name="payments_refund"), metadata=reader)
                break
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            if code != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                pytest.fail(f"payments_refund not registered ({code}): {payments.log_tail()}")
            await asyncio.sleep(0.2)
        assert (spec.endpoint, spec.registered_by) == (f"127.0.0.1:{tool_port}", "service:payments")
        # An anonymous re-registration pointing elsewhere: refused, the binding stays.
        hijack = tool_pb2.ToolSpec()
        hijack.CopyFrom(spec)
        hijack.version, hijack.endpoint = "1.0.1", "127.0.0.1:1"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RegisterTool(rs.RegisterToolRequest(tool=hijack))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        again = await stub.GetTool(rs.GetToolRequest(name="payments_refund", version="^1.0"), metadata=reader)
        assert (again.version, again.endpoint) == ("1.0.0", f"127.0.0.1:{tool_port}")

    # The tool verifies tool tokens against the registry's JWKS.
    app = load("payments")
    alice = Principal(subject="alice", tenant="acme", scopes=frozenset({"payments:refund"}))
    async with create_channel(f"127.0.0.1:{tool_port}") as channel:
        schema = app.methods["Refund"].schema
        tool_spec = prepare(
            tool_pb2.ToolSpec(
                file_descriptor_set=app.file_set_bytes,
                method=schema.method_name,
                endpoint=f"127.0.0.1:{tool_port}",
            )
        ).spec
        refund = ResolvedTool(tool_spec, schema, channel)
        arguments = {"charge_id": "ch_ORD-12345", "amount_cents": 100, "reason": "late"}

        def call(tool: str, step: int) -> CallContext:
            token = issuer.tool_token(tool=tool, principal=alice, scopes=alice.scopes, actor="refunds")
            tokens.append(token)
            return CallContext(task_id="t1", step=step, deadline=time.time() + 10, token=token)

        wrong = await ToolInvoker().invoke(refund, arguments, call("payments_charge", 1))
        assert wrong.status_code == "UNAUTHENTICATED", (wrong.observation, payments.log_tail())
        right = await ToolInvoker().invoke(refund, arguments, call("payments_refund", 2))
        assert right.outcome is CallOutcome.OK, right.observation
        # A tampered token (signature cut): refused, and the error does not echo it.
        tampered = tokens[-1].rsplit(".", 1)[0] + ".AAAA"
        tokens.append(tampered)
        refused = await ToolInvoker().invoke(
            refund, arguments, CallContext(task_id="t1", step=3, deadline=time.time() + 10, token=tampered)
        )
        assert refused.status_code == "UNAUTHENTICATED"
        assert tampered not in refused.observation and tampered not in str(refused.error)

    # The scrape: logs (DEBUG), spans (console exporter), the registry's records in Redis.
    for process in (payments, registry):
        assert process.stop() == 0
    store = await _redis_dump(redis_url)
    secrets = [*tokens, *(t.rsplit(".", 1)[1] for t in tokens), key.pem().decode().splitlines()[1]]
    for source, text in (
        ("registry log", _text(registry.log_path)),
        ("payments log", _text(payments.log_path)),
        ("redis", store),
    ):
        assert '"tool registered"' in text or source != "payments log", text[-2000:]
        found = [secret[:12] for secret in secrets if secret in text]
        assert not found, f"{source} holds a secret: {found}"
        # And nothing shaped like a JWT or a bearer credential at all.
        assert not JWT.search(text) and not BEARER.search(text), source
    assert "payments_refund" in store and "service:payments" in store


def _text(path: Path | None) -> str:
    assert path is not None
    return path.read_text(errors="replace")


async def _redis_dump(url: str) -> str:
    client = create_redis(url)
    try:
        parts = []
        async for name in client.scan_iter(match="am:*"):
            kind = await client.type(name)
            if kind == b"string":
                parts.append(repr(await client.get(name)))
            elif kind == b"hash":
                parts.append(repr(await client.hgetall(name)))
            elif kind == b"stream":
                parts.append(repr(await client.xrange(name)))
            else:
                parts.append(repr(name))
        return "\n".join(parts)
    finally:
        await client.aclose()


def test_the_registry_refuses_to_start_without_a_key_unless_insecure(redis_url: str) -> None:
    port = free_port_with_partner(1000)
    env = {
        "PATH": str(Path(sys.executable).parent),
        "REDIS_URL": redis_url,
        "AGENTMESH_GRPC_PORT": str(port),
        "AGENTMESH_LOG_FORMAT": "text",
    }
    done = subprocess.run(
        [AGENTMESH, "serve", "registry"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "AGENTMESH_JWKS" in done.stderr and "AGENTMESH_INSECURE_NO_AUTH" in done.stderr, done.stderr[
        -2000:
    ]

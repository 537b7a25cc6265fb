"""The tool SDK makes its Redis client at the first keyed call: a tool whose calls carry no
idempotency key never loads redis-py; keyed calls are still deduplicated; a bad REDIS_URL
still stops the start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentmesh.kit.testing import local_settings
from examples import dummy

ROOT = Path(__file__).resolve().parents[3]

# In a fresh interpreter (the test process has loaded redis-py long ago). Raw gRPC calls: the
# mesh's invoker would load redis-py itself (rate limits).
_SERVE_AND_CALL = """
import asyncio, json, sys
import grpc
from agentmesh.kit.testing import local_settings
from examples import dummy

def call(channel, app, method, request, response):
    return channel.unary_unary(
        f"/dummy.v1.Dummy/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=app.message(f"dummy.v1.{response}").FromString,
    )

async def main(redis_url):
    app = dummy.build()
    seen = {}
    async with app.serving(local_settings(redis_url=redis_url), register=False) as host:
        seen["after start"] = "redis" in sys.modules
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.grpc_port}") as channel:
            echo = call(channel, app, "Echo", None, "EchoResponse")
            await echo(app.message("dummy.v1.EchoRequest")(message="hi"))
            seen["after a read"] = "redis" in sys.modules
            act = call(channel, app, "Act", None, "ActResponse")
            request = app.message("dummy.v1.ActRequest")(action="a")
            for _ in range(2):
                await act(request, metadata=(("idempotency-key", "task-1:3"),))
            seen["after keyed calls"] = "redis" in sys.modules
            seen["effects"] = app.state.effects
    print(json.dumps(seen))

asyncio.run(main(sys.argv[1]))
"""


def test_redis_is_loaded_only_at_the_first_keyed_call(redis_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SERVE_AND_CALL, redis_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"after start": False, "after a read": False, "after keyed calls": True, "effects": 1}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://localhost:6379", "unsupported REDIS_URL scheme 'http'"),
        ("redis://localhost:port/0", "invalid REDIS_URL"),
        ("redis+sentinel://localhost:26379", "need the service name"),
    ],
)
async def test_a_bad_redis_url_still_stops_the_start(url: str, problem: str) -> None:
    app = dummy.build()
    with pytest.raises(ValueError, match=problem):
        await app.start(local_settings(redis_url=url), register=False)
    assert app.host is None

"""Tool call overhead: resolve + validate + generic invoke vs a direct stub-style call.

Both paths call the same server — the training dummy's Echo (READ_ONLY, 64-byte
message) served by the tool SDK in its own process, registered in a registry
process (valkey behind it). The client runs in this process:

- bare: a multicallable on a bare grpc.aio channel with the request message
  built once (what a generated stub does);
- tools: every call `ToolResolver.resolve("dummy_echo", "^1")` (a cache hit
  after the first), then `ToolInvoker.invoke(tool, json_text, CallContext(...))`:
  JSON parse, shape check, ParseDict, protovalidate, breaker, metadata, the
  generic call with a deadline, MessageToDict and the observation JSON.

Targets (issue 7): p50 <= 1.3x bare, throughput >= 0.7x bare at 1 and 32 in flight.

    python -m bench tools
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from agentmesh.kit.channels import create_channel
from agentmesh.kit.net import free_port_with_partner
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.proc import ServiceProcess
from agentmesh.v1 import tool_registry_service_pb2 as rs
from agentmesh.v1 import tool_registry_service_pb2_grpc
from bench.common import LoadResult, closed_loop, ratio, scaled, scaled_int
from bench.summary import Row
from tool_registry.descriptors import load_tool_schema
from tool_registry.invoke import CallContext, CallOutcome, ToolInvoker
from tool_registry.protoc import compile_protos
from tool_registry.resolver import ToolResolver

ROOT = Path(__file__).resolve().parents[1]
DURATION_S = float(os.environ.get("BENCH_DURATION", scaled(3.0, 1.0)))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", scaled_int(6, 2)))
MESSAGE = "x" * 64


def _start(name: str, module: str, log_dir: Path, **env: str) -> ServiceProcess:
    port = free_port_with_partner(1000)
    process = ServiceProcess(
        name=name,
        argv=[sys.executable, "-m", module],
        grpc_port=port,
        env={
            "AGENTMESH_GRPC_PORT": str(port),
            "AGENTMESH_LOG_LEVEL": "WARNING",
            "AGENTMESH_INSECURE_NO_AUTH": "true",  # auth costs: bench/auth.py
            **env,
        },
        log_path=log_dir / f"{name}.log",
        cwd=ROOT,
    )
    process.start()
    process.wait_serving_sync(60)
    return process


async def _wait_registered(registry: str) -> None:
    async with create_channel(registry, control_plane=True) as channel:
        stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
        end = time.monotonic() + 30
        while True:
            try:
                await stub.GetTool(rs.GetToolRequest(name="dummy_echo"), timeout=2)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.1)


async def _measure(registry: str, dummy: str, in_flight: int) -> tuple[LoadResult, LoadResult]:
    schema = load_tool_schema(
        compile_protos([ROOT / "examples" / "dummy" / "dummy.proto"]), "dummy.v1.Dummy/Echo"
    )
    request = schema.request_class(message=MESSAGE)
    arguments = '{"message": "' + MESSAGE + '"}'
    async with (
        grpc.aio.insecure_channel(dummy) as bare_channel,
        create_channel(registry, control_plane=True) as registry_channel,
    ):
        echo = bare_channel.unary_unary(
            schema.grpc_path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=schema.response_class.FromString,
        )
        resolver = ToolResolver(registry_channel)
        invoker = ToolInvoker()
        steps = iter(range(10**9))

        async def direct() -> object:
            return await echo(request, timeout=10)

        async def through_tools() -> object:
            tool = await resolver.resolve("dummy_echo", "^1")
            result = await invoker.invoke(
                tool, arguments, CallContext(task_id="bench", step=next(steps), deadline=time.time() + 30)
            )
            assert result.outcome is CallOutcome.OK, result.observation
            return result

        try:
            bare = await closed_loop(
                "bare stub-style call", direct, in_flight=in_flight, duration_s=DURATION_S
            )
            tools = await closed_loop(
                "resolve + validate + invoke", through_tools, in_flight=in_flight, duration_s=DURATION_S
            )
        finally:
            await resolver.close()
    return bare, tools


def main() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
        redis = EmbeddedRedis(data_dir=Path(tmp) / "valkey")
        redis.start()
        processes: list[ServiceProcess] = []
        try:
            registry = _start("registry", "tool_registry", Path(tmp), REDIS_URL=redis.url)
            processes.append(registry)
            dummy = _start(
                "dummy",
                "examples.dummy",
                Path(tmp),
                REDIS_URL=redis.url,
                AGENTMESH_REGISTRY=registry.target,
                AGENTMESH_MAX_IN_FLIGHT="0",
            )
            processes.append(dummy)
            asyncio.run(_wait_registered(registry.target))
            for in_flight in (1, 32):
                rates, p50s = [], []
                for _ in range(ROUNDS):
                    bare, tools = asyncio.run(_measure(registry.target, dummy.target, in_flight))
                    print(bare.line())
                    print(tools.line())
                    rates.append(tools.rate / bare.rate)
                    p50s.append(tools.p50 / bare.p50)
                print(
                    f"  in_flight={in_flight}: tools/bare throughput {statistics.median(rates):.2f}x "
                    f"(rounds {', '.join(f'{r:.2f}' for r in rates)}), p50 {statistics.median(p50s):.2f}x "
                    f"(rounds {', '.join(f'{p:.2f}' for p in p50s)}) "
                    f"[last round: {ratio(tools.rate, bare.rate)} / {tools.p50 - bare.p50:+.3f} ms]",
                    flush=True,
                )
                rate, p50 = statistics.median(rates), statistics.median(p50s)
                rounds = f"last round's values; ratio: median of rounds {min(p50s):.2f}-{max(p50s):.2f}"
                rows.append(
                    Row(
                        "tools",
                        f"call p50 / bare, {in_flight} in flight",
                        tools.p50,
                        "ms",
                        "<= 1.2x",
                        p50 <= 1.2,
                        baseline=bare.p50,
                        ratio=p50,
                        note=rounds,
                    )
                )
                rows.append(
                    Row(
                        "tools",
                        f"calls/s / bare, {in_flight} in flight",
                        tools.rate,
                        "/s",
                        ">= 0.8x",
                        rate >= 0.8,
                        baseline=bare.rate,
                        ratio=rate,
                    )
                )
        finally:
            for process in processes:
                process.stop()
            redis.cleanup()
    return rows


if __name__ == "__main__":
    main()

"""Tool Registry benchmark: RegisterTool, GetTool (cached / uncached), ListTools, WatchTools fan-out.

Servers run in separate processes from the client (a registry with its cache,
one without, and valkey), as DESIGN.md asks. The bare baseline is the kit's
own grpc.health.v1 Check on the same server in the same run, so the figures
are comparable across machines as ratios.

    python -m bench registry          # or: make bench
    python -m bench.registry serve    # (internal) a registry process; BENCH_NO_CACHE=1 disables the cache
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import Settings
from agentmesh.kit.net import free_port_with_partner
from agentmesh.kit.server import ServiceHost
from agentmesh.kit.streams import StreamSlots
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.proc import ServiceProcess
from agentmesh.v1 import tool_pb2, tool_registry_service_pb2_grpc
from agentmesh.v1 import tool_registry_service_pb2 as rs
from bench.common import scaled, scaled_int
from bench.summary import Row
from memory.connection import create_redis
from tool_registry.protoc import compile_protos
from tool_registry.server import registry_settings
from tool_registry.service import SERVICE, ToolRegistryServicer, register
from tool_registry.store import RegistryStore

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "tests" / "fixtures" / "protos"
DURATION_S = float(os.environ.get("BENCH_DURATION", scaled(3.0, 1.0)))
CONCURRENCY = 16
WATCHERS = 50
WATCH_ROUNDS = scaled_int(30, 5)


async def _serve() -> None:
    settings = registry_settings(Settings.from_env())
    host = ServiceHost(settings, name="registry", bounded=False)
    redis = create_redis(settings.redis_url)
    servicer = ToolRegistryServicer(
        RegistryStore(redis),
        draining=host.draining,
        cache=os.environ.get("BENCH_NO_CACHE") != "1",
        streams=StreamSlots(settings.max_streams, settings.max_streams_per_caller),
    )
    host.add_service(SERVICE, register(servicer))
    host.on_stop(servicer.close)
    await host.run()


async def _rate(call: Callable[[int], Awaitable[object]], in_flight: int = CONCURRENCY) -> float:
    """Calls per second with `in_flight` concurrent callers over DURATION_S."""
    deadline = time.perf_counter() + DURATION_S
    counter = [0]

    async def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            await call(index * 1_000_000 + counter[0])
            counter[0] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(in_flight)))
    return counter[0] / (time.perf_counter() - started)


def _start(name: str, redis_url: str, log_dir: Path, **env: str) -> ServiceProcess:
    port = free_port_with_partner(1000)
    process = ServiceProcess(
        name=name,
        argv=[sys.executable, "-m", "bench.registry", "serve"],
        grpc_port=port,
        env={
            "REDIS_URL": redis_url,
            "AGENTMESH_GRPC_PORT": str(port),
            "AGENTMESH_LOG_LEVEL": "WARNING",
            "AGENTMESH_MAX_IN_FLIGHT": "0",
            "AGENTMESH_INSECURE_NO_AUTH": "true",  # auth costs: bench/auth.py
            "AGENTMESH_MAX_STREAMS_PER_CALLER": "0",  # the fan-out holds 50 watchers from one caller
            **env,
        },
        log_path=log_dir / f"{name}.log",
        cwd=ROOT,
    )
    process.start()
    process.wait_serving_sync(60)
    return process


async def _bench(cached: ServiceProcess, uncached: ServiceProcess) -> dict[str, float]:
    fds = compile_protos([PROTO_DIR / "shop" / "v1" / "inventory.proto"], [PROTO_DIR]).SerializeToString()
    results: dict[str, float] = {}
    async with create_channel(cached.target) as a, create_channel(uncached.target) as b:
        stub, plain = (
            tool_registry_service_pb2_grpc.ToolRegistryServiceStub(a),
            tool_registry_service_pb2_grpc.ToolRegistryServiceStub(b),
        )
        health = health_pb2_grpc.HealthStub(a)
        results["baseline: health Check"] = await _rate(
            lambda _: health.Check(health_pb2.HealthCheckRequest())
        )

        async def register_one(index: int) -> None:
            tool = tool_pb2.ToolSpec(
                file_descriptor_set=fds,
                method="shop.v1.Inventory/Reserve",
                name=f"bench_{index}",
                version="1.0.0",
            )
            await stub.RegisterTool(rs.RegisterToolRequest(tool=tool))

        results["RegisterTool sequential (new tool each call)"] = await _rate(
            lambda i: register_one(10_000_000 + i), in_flight=1
        )
        results["RegisterTool (new tool each call)"] = await _rate(register_one)
        for client, label in ((stub, "cached"), (plain, "uncached")):
            basic = rs.GetToolRequest(name="bench_0", version="^1", view=tool_pb2.TOOL_VIEW_BASIC)
            full = rs.GetToolRequest(name="bench_0", version="^1")
            results[f"GetTool BASIC ({label})"] = await _rate(lambda _, c=client, r=basic: c.GetTool(r))
            results[f"GetTool FULL ({label})"] = await _rate(lambda _, c=client, r=full: c.GetTool(r))
        listing = rs.ListToolsRequest(page_size=100, name_prefix="bench_")
        results["ListTools 100 BASIC (cached)"] = await _rate(lambda _: stub.ListTools(listing))
        results["ListTools 100 BASIC (uncached)"] = await _rate(lambda _: plain.ListTools(listing))
        results.update(await _fan_out(stub, plain, fds))
    return results


async def _fan_out(
    writer: tool_registry_service_pb2_grpc.ToolRegistryServiceStub,
    watched: tool_registry_service_pb2_grpc.ToolRegistryServiceStub,
    fds: bytes,
) -> dict[str, float]:
    """Registration on one replica -> each of 50 watchers on the other replica."""
    head = (await watched.ListTools(rs.ListToolsRequest(page_size=1))).revision
    streams = [watched.WatchTools(rs.WatchToolsRequest(after_revision=head)) for _ in range(WATCHERS)]
    latencies: list[float] = []
    await asyncio.sleep(0.5)
    for round_ in range(WATCH_ROUNDS):
        tool = tool_pb2.ToolSpec(
            file_descriptor_set=fds,
            method="shop.v1.Inventory/Reserve",
            name=f"watched_{round_}",
            version="1.0.0",
        )
        started = time.perf_counter()

        async def receive(stream: object, started: float = started) -> float:
            await stream.read()  # type: ignore[attr-defined]
            return time.perf_counter() - started

        receivers = [asyncio.ensure_future(receive(s)) for s in streams]
        await writer.RegisterTool(rs.RegisterToolRequest(tool=tool))
        latencies += await asyncio.gather(*receivers)
    for stream in streams:
        stream.cancel()  # type: ignore[attr-defined]
    latencies.sort()
    return {
        "WatchTools fan-out to 50 watchers p50 (ms)": statistics.median(latencies) * 1000,
        "WatchTools fan-out to 50 watchers p99 (ms)": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def main() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        redis = EmbeddedRedis(data_dir=Path(tmp) / "valkey")
        redis.start()
        processes: list[ServiceProcess] = []
        try:
            processes.append(_start("cached", redis.url, Path(tmp)))
            processes.append(_start("uncached", redis.url, Path(tmp), BENCH_NO_CACHE="1"))
            results = asyncio.run(_bench(*processes))
        finally:
            for process in processes:
                process.stop()
            redis.cleanup()
    baseline = results["baseline: health Check"]
    print(f"{'operation':48} {'value':>10} {'vs baseline':>12}")
    for name, value in results.items():
        ratio = "" if "(ms)" in name else f"{value / baseline:11.2f}x"
        unit = "" if "(ms)" in name else "/s"
        print(f"{name:48} {value:10.1f}{unit:2} {ratio:>12}")
    sequential = results["RegisterTool sequential (new tool each call)"]
    concurrent = results["RegisterTool (new tool each call)"]
    return [
        Row(
            "registry",
            "RegisterTool, sequential",
            sequential,
            "/s",
            ">= 300/s",
            sequential >= 300,
            baseline=baseline,
        ),
        Row(
            "registry", f"RegisterTool, {CONCURRENCY} writers", concurrent, "/s", "-", None, baseline=baseline
        ),
        Row(
            "registry",
            "GetTool FULL, cached",
            results["GetTool FULL (cached)"],
            "/s",
            "-",
            None,
            baseline=baseline,
            ratio=results["GetTool FULL (cached)"] / baseline,
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        asyncio.run(_serve())
    else:
        main()

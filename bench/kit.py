"""Kit overhead: one unary call through ServiceHost (edge interceptor, health, reflection,
metrics) vs the same handler on a bare grpc.aio server. 64-byte payload, loopback,
client and servers in separate processes, both measured in the same run."""

from __future__ import annotations

import asyncio

import grpc

from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc
from bench.common import closed_loop, ratio, scaled, start_server
from bench.summary import Row

DURATION_S = scaled(3.0, 1.0)
PAYLOAD = "x" * 64


async def measure(target: str, label: str, in_flight: int):  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        request = agent_service_pb2.GetTaskRequest(task_id=PAYLOAD)
        return await closed_loop(
            label, lambda: stub.GetTask(request), in_flight=in_flight, duration_s=DURATION_S
        )


def main() -> list[Row]:
    rows = []
    servers = {
        mode: start_server(f"kit-{mode}", "bench.kit_server", "--mode", mode) for mode in ("bare", "kit")
    }
    try:
        for in_flight in (1, 32):
            bare = asyncio.run(measure(servers["bare"].target, "bare grpc.aio echo", in_flight))
            kit = asyncio.run(
                measure(servers["kit"].target, "ServiceHost echo (edge interceptor)", in_flight)
            )
            print(bare.line())
            print(kit.line())
            print(
                f"  kit/bare: throughput {ratio(kit.rate, bare.rate)}, p50 {ratio(kit.p50, bare.p50)}, "
                f"added p50 {kit.p50 - bare.p50:+.3f} ms"
            )
            rows.append(
                Row(
                    "kit",
                    f"ServiceHost calls/s / bare, {in_flight} in flight",
                    kit.rate,
                    "/s",
                    "-",
                    None,
                    baseline=bare.rate,
                    ratio=kit.rate / bare.rate,
                )
            )
    finally:
        for server in servers.values():
            server.stop()
    return rows


if __name__ == "__main__":
    main()

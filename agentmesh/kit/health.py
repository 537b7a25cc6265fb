"""Client side of grpc.health.v1: check a service, wait until it serves."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.kit.channels import create_channel

SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"
UNKNOWN = "UNKNOWN"


async def check(target: str, service: str = "", timeout: float = 1.0) -> str:
    """SERVING, NOT_SERVING or UNKNOWN (unreachable, unknown service, timeout)."""
    async with create_channel(target, control_plane=False) as channel:
        return await check_on(channel, service, timeout)


async def check_on(channel: grpc.aio.Channel, service: str = "", timeout: float = 1.0) -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.aio.AioRpcError:
        return UNKNOWN
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def wait_serving(target: str, service: str = "", timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll until `target` reports SERVING; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    async with create_channel(target) as channel:
        status = UNKNOWN
        while time.monotonic() < deadline:
            status = await check_on(
                channel, service, timeout=min(1.0, max(0.05, deadline - time.monotonic()))
            )
            if status == SERVING:
                return
            await asyncio.sleep(interval)
    raise TimeoutError(f"{target} (service {service!r}) not SERVING after {timeout:.1f}s (last: {status})")


def check_sync(target: str, service: str = "", timeout: float = 1.0) -> str:
    """Blocking variant for synchronous callers (CLI status, test set-up). Never call it on an event loop."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return UNKNOWN
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

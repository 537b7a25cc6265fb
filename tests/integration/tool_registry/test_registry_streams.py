"""WatchTools streams: bounded per caller and per replica, and closing them leaves nothing pending."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import grpc
import pytest

from agentmesh.kit.errors import from_rpc_error
from agentmesh.kit.streams import StreamSlots
from agentmesh.v1 import tool_pb2
from agentmesh.v1 import tool_registry_service_pb2 as rs
from tests.support.registry import registry_at
from tests.support.waiting import until

pytestmark = pytest.mark.integration


async def _open(stub: Any, count: int) -> list[Any]:
    """`count` WatchTools calls (grpc.aio starts a call when it is made; callers wait for the server)."""
    return [stub.WatchTools(rs.WatchToolsRequest()) for _ in range(count)]


async def test_closed_watch_streams_leave_no_pending_task(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """200 streams cancelled at once: every handler ends, its slot is freed, no getter is left pending.

    grpcio does not deliver every one of 200 cancellations sent at once to the server (seen: 0 to
    80 handlers left waiting, even after the client's channel closed); the registry's PROGRESS
    write on an idle stream is what ends those, so this test fails without it.
    """
    caplog.set_level(logging.ERROR, logger="asyncio")
    async with registry_at(redis_url, streams=StreamSlots(0, 0), progress_s=0.5) as registry:
        streams = await _open(registry.stub, 200)
        await until(lambda: registry.servicer.feed.subscribers == 200, what="200 WatchTools subscribers")
        for stream in streams:
            stream.cancel()
        await until(
            lambda: registry.servicer.feed.subscribers == 0 and registry.servicer.streams.open == 0,
            what="every subscriber gone and every stream slot free",
        )
        await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
    destroyed = [r for r in caplog.records if "Task was destroyed but it is pending" in r.getMessage()]
    assert destroyed == []


async def test_watch_streams_are_bounded_per_caller_and_per_replica(redis_url: str) -> None:
    async with registry_at(redis_url, streams=StreamSlots(max_streams=6, max_per_caller=4)) as registry:
        held = await _open(registry.stub, 4)
        await until(lambda: registry.servicer.streams.open == 4, what="4 streams held")
        refused = registry.stub.WatchTools(rs.WatchToolsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as per_caller:
            await refused.read()
        registry.servicer.streams.max_per_caller = 0  # now only the replica's bound applies
        held += await _open(registry.stub, 2)
        await until(lambda: registry.servicer.streams.open == 6, what="6 streams held")
        with pytest.raises(grpc.aio.AioRpcError) as per_replica:
            await registry.stub.WatchTools(rs.WatchToolsRequest()).read()
        # unary calls are unaffected while the streams are held
        assert (await registry.stub.ListTools(rs.ListToolsRequest())).tools is not None
        for stream in held:
            stream.cancel()
        await until(lambda: registry.servicer.streams.open == 0, what="every stream slot released")
    for caught, reason, key in (
        (per_caller, "RATE_LIMITED", "max_streams_per_caller"),
        (per_replica, "OVERLOADED", "max_streams"),
    ):
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        error = from_rpc_error(caught.value)
        assert error.reason == reason and key in error.metadata
        assert error.retry_after is not None and error.retry_after > 0


async def test_an_idle_watch_stream_gets_the_current_revision_as_progress(redis_url: str) -> None:
    async with registry_at(redis_url, progress_s=0.2) as registry:
        head = (await registry.stub.ListTools(rs.ListToolsRequest(page_size=1))).revision
        stream = registry.stub.WatchTools(rs.WatchToolsRequest(after_revision=head))
        try:
            first = await asyncio.wait_for(stream.read(), 30)
            second = await asyncio.wait_for(stream.read(), 30)
        finally:
            stream.cancel()
    for change in (first, second):
        assert change.kind == tool_pb2.CHANGE_KIND_PROGRESS
        assert change.revision == head and not change.tool_name

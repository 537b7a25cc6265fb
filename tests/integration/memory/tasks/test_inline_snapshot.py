"""An inline Run starts from the snapshot its create script wrote, not from a read-back: that
snapshot must be what a read of the stored task gives (else the attempt would run on stale or
missing bookkeeping)."""

from __future__ import annotations

import dataclasses

import pytest

from agentmesh.v1 import agent_service_pb2
from agents.requests import new_task
from memory.tasks.queue import TaskQueue
from tests.support.task_helpers import OWNER, TENANT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("with_parts", [False, True])
async def test_the_inline_snapshot_is_what_the_store_holds(queue: TaskQueue, with_parts: bool) -> None:
    request = agent_service_pb2.RunRequest(
        instruction="where is order 7?", request_id=f"inline-snapshot-{with_parts}", session_id="s-1"
    )
    request.labels["team"] = "ops"
    if with_parts:
        request.parts.add(text="attached")
    created = await queue.admission._create("run", new_task(request), TENANT, OWNER, None, inline=True)
    assert created.new and created.snapshot is not None
    stored = await queue.store.snapshot(created.task.task_id, steps=True)
    assert stored is not None
    # Everything but the lease's remaining time (a clock reading) is the same.
    assert dataclasses.replace(created.snapshot, lease_ttl_ms=0) == dataclasses.replace(
        stored, lease_ttl_ms=0
    )
    assert created.snapshot.lease_alive and stored.lease_alive

"""RegistryStore.create_tool: the one-script write (ownership inside it, revision taken in it)."""

from __future__ import annotations

import pytest
from redis import asyncio as redis_asyncio

from agentmesh.kit.errors import PermissionDenied
from agentmesh.v1 import tool_pb2
from memory.connection import create_redis
from tool_registry.store import RegistryStore, VersionTaken, Writer

pytestmark = pytest.mark.integration


def _spec(name: str, version: str) -> tool_pb2.ToolSpec:
    return tool_pb2.ToolSpec(name=name, version=version, method="pay.v1.Payments/Refund", description="d")


async def test_create_checks_the_owner_inside_the_write_and_stamps_the_revision(redis_url: str) -> None:
    redis: redis_asyncio.Redis = create_redis(redis_url)
    store = RegistryStore(redis)
    head = await store.head()
    alice, bob = Writer("alice"), Writer("bob")

    first = await store.create_tool(_spec("own_tool", "1.0.0"), b"schema-1", writer=alice)
    assert first.revision == head + 1 == await store.head()
    assert first.registered_by == "alice"
    assert await store.owner("tool:own_tool") == "alice"
    stored = await store.get_tool("own_tool", "1.0.0")
    assert stored is not None and stored.revision == first.revision and stored.registered_by == "alice"
    assert await store.get_schema("own_tool", "1.0.0") == b"schema-1"
    (change,) = (await store.changes_after(head)).changes
    assert (change.revision, change.tool.revision, change.tool_name) == (first.revision,) * 2 + ("own_tool",)
    assert change.kind == tool_pb2.CHANGE_KIND_TOOL_REGISTERED and change.tool.registered_by == "alice"

    # Another writer: refused before any write (no version, no revision, no change).
    with pytest.raises(PermissionDenied):
        await store.create_tool(_spec("own_tool", "1.1.0"), b"schema-2", writer=bob)
    assert await store.versions("own_tool") == {"1.0.0": False}
    assert await store.head() == first.revision
    assert await store.get_schema("own_tool", "1.1.0") is None

    with pytest.raises(VersionTaken):
        await store.create_tool(_spec("own_tool", "1.0.0"), b"schema-1", writer=alice)

    # An admin writes another's name and leaves the owner as it is; revisions stay contiguous.
    admin = await store.create_tool(_spec("own_tool", "1.1.0"), b"schema-2", writer=Writer("ops", admin=True))
    assert admin.revision == first.revision + 1 and admin.registered_by == "ops"
    assert await store.owner("tool:own_tool") == "alice"
    assert [c.revision for c in (await store.changes_after(head)).changes] == [first.revision, admin.revision]
    await redis.aclose()

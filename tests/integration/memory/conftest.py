"""Fixtures for the memory layer: the same tests against one server and a real 3-node cluster
(`backend_url`, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from memory.connection import AnyRedis, create_redis
from memory.tasks.queue import TaskQueue
from memory.tasks.store import TaskConfig

# Short timeouts so recovery paths run in test time; never assert on timing with them.
FAST = TaskConfig(shards=2, claim_idle_timeout_s=1.0, read_block_s=0.2, max_attempts=2)


@pytest.fixture
async def client(backend_url: str) -> AsyncIterator[AnyRedis]:
    redis = create_redis(backend_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def queue(client: AnyRedis) -> TaskQueue:
    queue = TaskQueue(client, domain="refunds", config=FAST)
    await queue.ensure_groups()
    return queue


@pytest.fixture
async def single_queue(redis_url: str) -> AsyncIterator[TaskQueue]:
    """A queue on the single server only (for tests that look at raw keys or stop the server)."""
    redis = create_redis(redis_url)
    queue = TaskQueue(redis, domain="refunds", config=FAST)
    await queue.ensure_groups()
    yield queue
    await redis.aclose()

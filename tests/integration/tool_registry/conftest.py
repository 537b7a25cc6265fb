"""Fixtures: a real registry on the test Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.registry import Registry, registry_at


@pytest.fixture
async def registry(redis_url: str) -> AsyncIterator[Registry]:
    async with registry_at(redis_url) as reg:
        yield reg

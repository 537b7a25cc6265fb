"""Fixtures: a real registry on the test Redis, and on a real 3-node cluster (`backend_url`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.registry import Registry, registry_at


@pytest.fixture
async def registry(backend_url: str) -> AsyncIterator[Registry]:
    async with registry_at(backend_url) as reg:
        yield reg

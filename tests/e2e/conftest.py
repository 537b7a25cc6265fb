"""End-to-end fixtures: each test module gets its own valkey (its mesh's state starts empty)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentmesh.localmesh.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("e2e-valkey"))
    server.start()
    yield server
    server.cleanup()

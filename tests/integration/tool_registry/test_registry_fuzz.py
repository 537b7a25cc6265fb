"""Fuzz RegisterTool: whatever arrives, the answer is a typed error or success, never INTERNAL/UNKNOWN."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmesh.kit.errors import AgentmeshError, Internal, Unknown
from agentmesh.v1 import tool_pb2
from agentmesh.v1 import tool_registry_service_pb2 as rs
from tool_registry.protoc import compile_protos
from tool_registry.service import ToolRegistryServicer
from tool_registry.store import RegistryStore

pytestmark = pytest.mark.integration

PROTOS = Path(__file__).resolve().parents[2] / "fixtures" / "protos"
VALID = compile_protos([PROTOS / "shop" / "v1" / "inventory.proto"], [PROTOS]).SerializeToString()
METHODS = ["shop.v1.Inventory/Reserve", "shop.v1.Inventory/WatchStock", "shop.v1.Inventory/Check", "x", ""]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        else:
            del data[position:]
        if not data:
            break
    return bytes(data)


requests = st.builds(
    lambda fds, method, name, version, endpoint, validate_only: rs.RegisterToolRequest(
        tool=tool_pb2.ToolSpec(
            file_descriptor_set=fds, method=method, name=name, version=version, endpoint=endpoint
        ),
        validate_only=validate_only,
    ),
    fds=st.one_of(st.binary(max_size=256), mutated(), st.just(VALID)),
    method=st.one_of(st.sampled_from(METHODS), st.text(max_size=40)),
    name=st.one_of(st.just(""), st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.text(max_size=20)),
    version=st.one_of(
        st.just(""), st.sampled_from(["1.0.0", "2.0.0-rc.1", "1.2", "01.0.0"]), st.text(max_size=12)
    ),
    endpoint=st.one_of(st.just(""), st.text(max_size=30)),
    validate_only=st.booleans(),
)


@pytest.fixture
def servicer(redis_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, ToolRegistryServicer]]:
    loop = asyncio.new_event_loop()
    client = redis_asyncio.Redis.from_url(redis_url)
    servicer = ToolRegistryServicer(RegistryStore(client))
    yield loop, servicer
    loop.run_until_complete(servicer.close())
    loop.run_until_complete(client.aclose())
    loop.close()


def test_register_tool_never_fails_internally(
    servicer: tuple[asyncio.AbstractEventLoop, ToolRegistryServicer],
) -> None:
    loop, registry = servicer
    outcomes: set[str] = set()
    failures: list[str] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(request=requests)
    def register(request: rs.RegisterToolRequest) -> None:
        try:
            loop.run_until_complete(registry.RegisterTool(request, None))  # type: ignore[arg-type]
            outcomes.add("OK")
        except AgentmeshError as exc:
            outcomes.add(exc.code.name)
            failures.extend([repr(exc)] if isinstance(exc, Internal | Unknown) else [])

    register()
    assert failures == []
    assert "INVALID_ARGUMENT" in outcomes

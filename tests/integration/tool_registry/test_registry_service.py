"""ToolRegistryService over real gRPC and a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

from agentmesh.kit.errors import from_rpc_error
from agentmesh.v1 import agent_service_pb2, tool_options_pb2, tool_pb2
from agentmesh.v1 import tool_registry_service_pb2 as rs
from tests.support.registry import Registry, registry_at, snapshot
from tool_registry.protoc import compile_protos
from tool_registry.store import changes_key

pytestmark = pytest.mark.integration

TEMPLATE = """syntax = "proto3";
package pay.v1;
import "agentmesh/v1/tool_options.proto";
// Payments.
service Payments {
  // Refunds a charge.
  rpc Refund(RefundRequest) returns (RefundResponse) {
    option (agentmesh.v1.tool) = {
      name: "payments_refund" version: "VERSION" side_effect: SIDE_EFFECT_KEYED
      required_scopes: ["payments:refund"] tags: ["billing"] timeout: {seconds: 10}
    };
  }
  // Streams refunds.
  rpc Stream(RefundRequest) returns (stream RefundResponse);
}
// What to refund.
message RefundRequest {
  // The charge.
  string charge_id = 1;
  FIELDS
}
// The refund.
message RefundResponse {
  // Refund id.
  string refund_id = 1;
}
"""


def tool_set(tmp_path: Path, version: str = "1.0.0", fields: str = "int64 amount = 2;") -> bytes:
    directory = tmp_path / f"v{version}-{abs(hash(fields))}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pay.proto"
    path.write_text(TEMPLATE.replace("VERSION", version).replace("FIELDS", fields))
    return compile_protos([path], [directory]).SerializeToString()


def spec(data: bytes, **overrides: object) -> tool_pb2.ToolSpec:
    fields: dict[str, object] = {"method": "pay.v1.Payments/Refund", **overrides}
    return tool_pb2.ToolSpec(file_descriptor_set=data, **fields)  # type: ignore[arg-type]


async def expect(call: object, code: grpc.StatusCode) -> object:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    return from_rpc_error(caught.value)


async def test_register_defaults_from_option_then_idempotent_rebind_and_immutable(
    registry: Registry, tmp_path: Path
) -> None:
    data = tool_set(tmp_path)
    first = await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(data)))
    assert first.outcome == rs.REGISTRATION_OUTCOME_CREATED
    tool = first.tool
    assert (tool.name, tool.version, tool.side_effect) == (
        "payments_refund",
        "1.0.0",
        tool_options_pb2.SIDE_EFFECT_KEYED,
    )
    assert tool.description == "Refunds a charge."
    assert list(tool.required_scopes) == ["payments:refund"] and tool.timeout.seconds == 10
    assert tool.input_type == "pay.v1.RefundRequest" and tool.kind == tool_pb2.TOOL_KIND_GRPC
    assert len(tool.content_digest) == 64 and tool.revision == 1

    again = await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(data)))
    assert again.outcome == rs.REGISTRATION_OUTCOME_UNCHANGED and again.tool.revision == 1

    rebound = await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(data, endpoint="pay:50071")))
    assert rebound.outcome == rs.REGISTRATION_OUTCOME_REBOUND
    assert rebound.tool.endpoint == "pay:50071" and rebound.tool.revision == 2
    assert rebound.tool.content_digest == tool.content_digest

    before = await snapshot(registry.redis)
    error = await expect(
        registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(data, description="Other words."))),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert error.reason == "TOOL_VERSION_EXISTS" and "description" in error.message  # type: ignore[attr-defined]
    changed = tool_set(tmp_path, fields="int64 amount = 2; string reason = 3;")
    error = await expect(
        registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(changed, timeout={"seconds": 3}))),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert error.metadata["differs"] == "schema,timeout"  # type: ignore[attr-defined]
    assert await snapshot(registry.redis) == before


async def test_validate_only_stores_nothing(registry: Registry, tmp_path: Path) -> None:
    before = await snapshot(registry.redis)
    response = await registry.stub.RegisterTool(
        rs.RegisterToolRequest(tool=spec(tool_set(tmp_path)), validate_only=True)
    )
    assert response.outcome == rs.REGISTRATION_OUTCOME_VALIDATED and response.tool.name == "payments_refund"
    assert await snapshot(registry.redis) == before


async def test_get_tool_by_exact_latest_and_range(registry: Registry, tmp_path: Path) -> None:
    for version, fields in [
        ("1.0.0", ""),
        ("1.2.0", "int64 amount = 2;"),
        ("1.3.0", "int64 amount = 2; string r = 3;"),
    ]:
        await registry.stub.RegisterTool(
            rs.RegisterToolRequest(tool=spec(tool_set(tmp_path, version, fields)))
        )
    get = registry.stub.GetTool
    assert (await get(rs.GetToolRequest(name="payments_refund"))).version == "1.3.0"
    assert (await get(rs.GetToolRequest(name="payments_refund", version="~1.2"))).version == "1.2.0"
    assert (await get(rs.GetToolRequest(name="payments_refund", version="1.0.0"))).version == "1.0.0"
    full = await get(rs.GetToolRequest(name="payments_refund", version="^1.0"))
    assert descriptor_pb2.FileDescriptorSet.FromString(full.file_descriptor_set).file
    basic = await get(rs.GetToolRequest(name="payments_refund", view=tool_pb2.TOOL_VIEW_BASIC))
    assert not basic.file_descriptor_set
    await registry.stub.DeprecateTool(
        rs.DeprecateToolRequest(name="payments_refund", version="1.3.0", message="use 1.2")
    )
    assert (await get(rs.GetToolRequest(name="payments_refund", version="latest"))).version == "1.2.0"
    assert (await get(rs.GetToolRequest(name="payments_refund", version="1.3.0"))).deprecated
    error = await expect(
        get(rs.GetToolRequest(name="payments_refund", version="^2")), grpc.StatusCode.NOT_FOUND
    )
    assert error.reason == "TOOL_NOT_FOUND" and "1.3.0" in error.message  # type: ignore[attr-defined]
    await expect(get(rs.GetToolRequest(name="nope")), grpc.StatusCode.NOT_FOUND)
    error = await expect(
        get(rs.GetToolRequest(name="payments_refund", version="^^1")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert error.violations[0].field == "version"  # type: ignore[attr-defined]


async def test_schema_exporter_fills_full_views(redis_url: str, tmp_path: Path) -> None:
    calls = []

    def exporter(schema):  # type: ignore[no-untyped-def]
        calls.append(schema.method_name)
        return '{"title": "in"}', '{"title": "out"}'

    async with registry_at(redis_url, schema_exporter=exporter) as reg:
        await reg.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path))))
        full = await reg.stub.GetTool(rs.GetToolRequest(name="payments_refund"))
        assert (full.input_schema_json, full.output_schema_json) == ('{"title": "in"}', '{"title": "out"}')
        basic = await reg.stub.ListTools(rs.ListToolsRequest())
        assert not basic.tools[0].input_schema_json
        await reg.stub.GetTool(rs.GetToolRequest(name="payments_refund"))
        assert calls == ["pay.v1.Payments/Refund"]  # exported once per version


async def test_breaking_change_refused_unless_major_bump(registry: Registry, tmp_path: Path) -> None:
    await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path, "1.0.0"))))
    breaking = tool_set(tmp_path, "1.1.0", "string amount = 2; bool full = 3;")
    before = await snapshot(registry.redis)
    error = await expect(
        registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(breaking))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error.reason == "BREAKING_CHANGE"  # type: ignore[attr-defined]
    assert [(v.field, v.reason) for v in error.violations] == [  # type: ignore[attr-defined]
        ("pay.v1.RefundRequest.amount", "FIELD_WIRE_JSON_COMPATIBLE_TYPE")
    ]
    # The refusal names the version the change would be accepted as.
    assert "publish it as 2.0.0" in error.message  # type: ignore[attr-defined]
    assert error.metadata["accepted_version"] == "2.0.0"  # type: ignore[attr-defined]
    assert await snapshot(registry.redis) == before

    check = await registry.stub.CheckCompatibility(rs.CheckCompatibilityRequest(tool=spec(breaking)))
    assert not check.compatible and check.compared_version == "1.0.0"
    assert check.violations[0].rule == "FIELD_WIRE_JSON_COMPATIBLE_TYPE"
    fine = tool_set(tmp_path, "1.1.0", "int64 amount = 2; bool full = 3;")
    assert (await registry.stub.CheckCompatibility(rs.CheckCompatibilityRequest(tool=spec(fine)))).compatible

    major = tool_set(tmp_path, "2.0.0", "string amount = 2;")
    created = await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(major)))
    assert created.outcome == rs.REGISTRATION_OUTCOME_CREATED
    # A backfilled 1.x must also be compatible with the next 1.x above it.
    await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(fine)))
    backfill = tool_set(tmp_path, "1.0.5", "int64 amount = 2; string full = 3;")
    error = await expect(
        registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(backfill))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error.metadata["compared_version"] == "1.1.0"  # type: ignore[attr-defined]
    # 2.0.0 is taken: the first major above every published one is named.
    assert error.metadata["accepted_version"] == "3.0.0"  # type: ignore[attr-defined]


BAD_INPUTS = {
    "garbage": (lambda data: spec(b"\xff\x00garbage\x12"), "tool.file_descriptor_set", "is not a serialized"),
    "missing_imports": (
        lambda data: spec(
            descriptor_pb2.FileDescriptorSet(
                file=[descriptor_pb2.FileDescriptorSet.FromString(data).file[-1]]
            ).SerializeToString()
        ),
        "tool.file_descriptor_set",
        "not self-contained",
    ),
    "unknown_method": (
        lambda data: spec(data, method="pay.v1.Payments/Nope"),
        "tool.method",
        "has no method 'Nope'",
    ),
    "streaming": (
        lambda data: spec(data, method="pay.v1.Payments/Stream"),
        "tool.method",
        "server-streaming",
    ),
    "illegal_name": (lambda data: spec(data, name="Payments-Refund"), "tool.name", "not a valid tool name"),
    "reserved_name": (lambda data: spec(data, name="agent_refunds"), "tool.name", "reserved for agents"),
    "illegal_version": (lambda data: spec(data, version="1.2"), "tool.version", "semantic version"),
    "too_many_retries": (
        lambda data: spec(data, retry={"max_attempts": 11}),
        "tool.retry.max_attempts",
        "between 0 and 10",
    ),
    "negative_timeout": (lambda data: spec(data, timeout={"seconds": -1}), "tool.timeout", "negative"),
    "bad_tag": (lambda data: spec(data, tags=["Not A Tag"]), "tool.tags[0]", "not a valid tag"),
    "negative_rate": (
        lambda data: spec(data, rate_limit={"requests_per_second": -1}),
        "tool.rate_limit.requests_per_second",
        ">= 0",
    ),
    "huge": (lambda data: spec(b"\n" + b"\xff" * (50 * 1024 * 1024)), "tool.file_descriptor_set", "at most"),
    "no_method": (lambda data: tool_pb2.ToolSpec(file_descriptor_set=data), "tool.method", "is required"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_bad_input_is_invalid_argument_and_changes_nothing(
    registry: Registry, tmp_path: Path, case: str
) -> None:
    build, field, text = BAD_INPUTS[case]
    await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path, "0.9.0"))))
    before = await snapshot(registry.redis)
    request = rs.RegisterToolRequest(tool=build(tool_set(tmp_path)))
    error = await expect(registry.stub.RegisterTool(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert any(v.field == field and text in v.description for v in error.violations), error.violations  # type: ignore[attr-defined]
    assert await snapshot(registry.redis) == before


async def test_list_tools_pages_and_filters(registry: Registry, tmp_path: Path) -> None:
    for index in range(5):
        data = tool_set(tmp_path, f"1.{index}.0", "int64 amount = 2;")
        await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(data, name=f"tool_{index}")))
    for version in ("1.0.0", "1.1.0"):
        data = tool_set(tmp_path, version)
        await registry.stub.RegisterTool(
            rs.RegisterToolRequest(
                tool=spec(
                    data, name="reader", side_effect=tool_options_pb2.SIDE_EFFECT_READ_ONLY, tags=["crm"]
                )
            )
        )
    seen, token = [], ""
    while True:
        page = await registry.stub.ListTools(rs.ListToolsRequest(page_size=2, page_token=token))
        seen += [t.name for t in page.tools]
        assert all(not t.file_descriptor_set for t in page.tools)
        token = page.next_page_token
        if not token:
            break
    assert seen == ["reader", "tool_0", "tool_1", "tool_2", "tool_3", "tool_4"]
    assert page.revision == 7
    every = await registry.stub.ListTools(rs.ListToolsRequest(all_versions=True, name_prefix="reader"))
    assert [(t.name, t.version) for t in every.tools] == [("reader", "1.0.0"), ("reader", "1.1.0")]
    tagged = await registry.stub.ListTools(rs.ListToolsRequest(tag="crm"))
    assert [t.name for t in tagged.tools] == ["reader"]
    reads = await registry.stub.ListTools(
        rs.ListToolsRequest(side_effect=tool_options_pb2.SIDE_EFFECT_READ_ONLY)
    )
    assert [t.name for t in reads.tools] == ["reader"]
    await registry.stub.DeprecateTool(rs.DeprecateToolRequest(name="tool_3", message="gone"))
    listed = await registry.stub.ListTools(rs.ListToolsRequest(name_prefix="tool_"))
    assert [t.name for t in listed.tools] == ["tool_0", "tool_1", "tool_2", "tool_4"]
    only = await registry.stub.ListTools(rs.ListToolsRequest(deprecated=rs.DEPRECATION_FILTER_ONLY))
    assert [(t.name, t.deprecation_message) for t in only.tools] == [("tool_3", "gone")]
    await expect(
        registry.stub.ListTools(rs.ListToolsRequest(page_size=2, page_token=token or "bm9wZQ==", tag="crm")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_bind_endpoint_and_watch(registry: Registry, tmp_path: Path) -> None:
    await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path))))
    bound = await registry.stub.BindToolEndpoint(
        rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0", endpoint="dns:///pay:50071")
    )
    assert bound.endpoint == "dns:///pay:50071" and bound.revision == 2
    cleared = await registry.stub.BindToolEndpoint(
        rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0")
    )
    assert cleared.endpoint == "" and cleared.revision == 3
    await expect(
        registry.stub.BindToolEndpoint(rs.BindToolEndpointRequest(name="payments_refund", version="9.0.0")),
        grpc.StatusCode.NOT_FOUND,
    )
    stream = registry.stub.WatchTools(rs.WatchToolsRequest(after_revision=0))
    kinds = [(await stream.read()).kind for _ in range(3)]
    assert kinds == [
        tool_pb2.CHANGE_KIND_TOOL_REGISTERED,
        tool_pb2.CHANGE_KIND_ENDPOINT_CHANGED,
        tool_pb2.CHANGE_KIND_ENDPOINT_CHANGED,
    ]
    # Live: a change after the catch-up arrives on the same stream.
    await registry.stub.DeprecateTool(rs.DeprecateToolRequest(name="payments_refund", message="old"))
    live = await asyncio.wait_for(stream.read(), 10)
    assert (live.kind, live.revision, live.tool.deprecated) == (tool_pb2.CHANGE_KIND_TOOL_DEPRECATED, 4, True)
    stream.cancel()
    # Resume from a revision, with a name filter.
    resumed = registry.stub.WatchTools(rs.WatchToolsRequest(after_revision=2, names=["payments_refund"]))
    assert (await resumed.read()).revision == 3
    resumed.cancel()


async def test_watch_reports_resync_when_the_log_no_longer_reaches_back(
    registry: Registry, tmp_path: Path
) -> None:
    await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path))))
    await registry.stub.BindToolEndpoint(
        rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0", endpoint="a:1")
    )
    await registry.redis.xtrim(changes_key(), maxlen=0)  # retention lost everything
    stream = registry.stub.WatchTools(rs.WatchToolsRequest(after_revision=1))
    first = await stream.read()
    assert (first.kind, first.revision) == (tool_pb2.CHANGE_KIND_RESYNC_REQUIRED, 2)
    await registry.stub.BindToolEndpoint(
        rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0", endpoint="b:1")
    )
    assert (await asyncio.wait_for(stream.read(), 10)).revision == 3
    stream.cancel()
    ahead = registry.stub.WatchTools(rs.WatchToolsRequest(after_revision=99))  # e.g. the store was reset
    assert (await ahead.read()).kind == tool_pb2.CHANGE_KIND_RESYNC_REQUIRED
    ahead.cancel()


async def test_watch_ends_when_the_host_drains(registry: Registry) -> None:
    stream = registry.stub.WatchTools(rs.WatchToolsRequest())
    reader = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0.2)
    registry.servicer.draining.set()
    result = await asyncio.wait_for(reader, 10)
    assert result is grpc.aio.EOF
    assert await stream.code() == grpc.StatusCode.OK


CARD = agent_service_pb2.AgentCard(
    domain="order-fulfillment",
    description="Ships orders.",
    endpoint="fulfillment:50062",
    required_scopes=["orders:write"],
)


async def test_agent_directory_and_virtual_tool(registry: Registry, tmp_path: Path) -> None:
    stored = await registry.stub.RegisterAgent(rs.RegisterAgentRequest(card=CARD))
    assert stored.revision == 1
    updated = agent_service_pb2.AgentCard()
    updated.CopyFrom(CARD)
    updated.description = "Ships and tracks orders."
    again = await registry.stub.RegisterAgent(rs.RegisterAgentRequest(card=updated))
    assert again.revision == 2 and again.description == "Ships and tracks orders."
    assert (await registry.stub.GetAgent(rs.GetAgentRequest(domain="order-fulfillment"))).revision == 2
    tool = await registry.stub.GetTool(rs.GetToolRequest(name="agent_order_fulfillment", version="^1"))
    assert tool.kind == tool_pb2.TOOL_KIND_AGENT and tool.method == "agentmesh.v1.AgentService/Run"
    assert tool.input_type == "agentmesh.v1.RunRequest" and tool.endpoint == "fulfillment:50062"
    assert (
        tool.side_effect == tool_options_pb2.SIDE_EFFECT_KEYED
        and tool.description == "Ships and tracks orders."
    )
    assert descriptor_pb2.FileDescriptorSet.FromString(tool.file_descriptor_set).file
    await expect(registry.stub.GetTool(rs.GetToolRequest(name="agent_nobody")), grpc.StatusCode.NOT_FOUND)
    await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path))))
    plain = await registry.stub.ListTools(rs.ListToolsRequest())
    assert [t.name for t in plain.tools] == ["payments_refund"]
    both = await registry.stub.ListTools(rs.ListToolsRequest(include_agents=True))
    assert [t.name for t in both.tools] == ["agent_order_fulfillment", "payments_refund"]
    agents = await registry.stub.ListAgents(rs.ListAgentsRequest())
    assert [a.domain for a in agents.agents] == ["order-fulfillment"]
    stream = registry.stub.WatchTools(rs.WatchToolsRequest())
    change = await stream.read()
    assert (change.kind, change.agent_domain, change.tool_name) == (
        tool_pb2.CHANGE_KIND_AGENT_REGISTERED,
        "order-fulfillment",
        "agent_order_fulfillment",
    )
    stream.cancel()
    error = await expect(
        registry.stub.GetAgent(rs.GetAgentRequest(domain="nobody")), grpc.StatusCode.NOT_FOUND
    )
    assert error.reason == "AGENT_NOT_FOUND"  # type: ignore[attr-defined]
    await expect(
        registry.stub.RegisterAgent(rs.RegisterAgentRequest(card=agent_service_pb2.AgentCard(domain="Bad"))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_data_survives_a_servicer_restart(backend_url: str, tmp_path: Path) -> None:
    async with registry_at(backend_url) as first:
        await first.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path))))
        await first.stub.RegisterAgent(rs.RegisterAgentRequest(card=CARD))
    async with registry_at(backend_url) as second:
        assert (await second.stub.GetTool(rs.GetToolRequest(name="payments_refund"))).version == "1.0.0"
        assert (await second.stub.GetAgent(rs.GetAgentRequest(domain="order-fulfillment"))).revision == 2
        again = await second.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path))))
        assert again.outcome == rs.REGISTRATION_OUTCOME_UNCHANGED


async def test_two_replicas_share_registrations_watches_and_cache_invalidation(
    backend_url: str, tmp_path: Path
) -> None:
    async with registry_at(backend_url) as a, registry_at(backend_url) as b:
        stream = b.stub.WatchTools(rs.WatchToolsRequest())
        await a.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path, "1.0.0"))))
        assert (await asyncio.wait_for(stream.read(), 10)).version == "1.0.0"
        assert (
            await b.stub.GetTool(rs.GetToolRequest(name="payments_refund"))
        ).version == "1.0.0"  # now cached on b
        await a.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path, "1.1.0"))))
        assert (await asyncio.wait_for(stream.read(), 10)).version == "1.1.0"
        # b's cache was invalidated by the change a wrote.
        for _ in range(100):
            if (await b.stub.GetTool(rs.GetToolRequest(name="payments_refund"))).version == "1.1.0":
                break
            await asyncio.sleep(0.05)
        assert (await b.stub.GetTool(rs.GetToolRequest(name="payments_refund"))).version == "1.1.0"
        assert b.servicer.cache.hits > 0
        stream.cancel()


async def test_concurrent_registrations_of_one_version_create_it_once(
    backend_url: str, tmp_path: Path
) -> None:
    data = tool_set(tmp_path)
    async with registry_at(backend_url) as a, registry_at(backend_url) as b:
        results = await asyncio.gather(
            *(r.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(data))) for r in (a, b, a, b))
        )
        outcomes = sorted(r.outcome for r in results)
        assert outcomes.count(rs.REGISTRATION_OUTCOME_CREATED) == 1
        assert await a.store.head() == 1


async def test_a_replica_reads_its_own_writes_before_its_change_feed_delivers_them(
    registry: Registry, tmp_path: Path
) -> None:
    """Read-your-writes: a write evicts the name from this replica's cache at once.

    The feed tail is detached from the cache after the first read, so a change reaches the cache
    only through the write itself (under load the tail lags the same way; GetTool right after
    DeprecateTool used to answer the cached, undeprecated spec).
    """
    await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path, "1.0.0"))))
    assert not (await registry.stub.GetTool(rs.GetToolRequest(name="payments_refund"))).deprecated
    assert registry.servicer.cache.get(("payments_refund", "versions")) is not None  # cached
    registry.servicer.feed.cache = None  # the tail no longer invalidates: only the writes do

    await registry.stub.DeprecateTool(rs.DeprecateToolRequest(name="payments_refund", message="old"))
    assert (await registry.stub.GetTool(rs.GetToolRequest(name="payments_refund"))).deprecated

    await registry.stub.BindToolEndpoint(
        rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0", endpoint="dns:///pay:50071")
    )
    got = await registry.stub.GetTool(rs.GetToolRequest(name="payments_refund", version="1.0.0"))
    assert got.endpoint == "dns:///pay:50071"

    await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=spec(tool_set(tmp_path, "1.1.0"))))
    assert (await registry.stub.GetTool(rs.GetToolRequest(name="payments_refund", version="^1"))).version == (
        "1.1.0"
    )

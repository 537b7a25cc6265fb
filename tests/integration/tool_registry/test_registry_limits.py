"""How large a tool may be: message chains and field counts are bounded with INVALID_ARGUMENT naming the
limit, never a RecursionError answered as INTERNAL (RegisterTool, CheckCompatibility, the JSON Schema)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2

from agentmesh.kit.errors import from_rpc_error
from agentmesh.v1 import tool_pb2
from agentmesh.v1 import tool_registry_service_pb2 as rs
from tests.support.registry import Registry, registry_at
from tool_registry.descriptors import MAX_MESSAGE_DEPTH, MAX_TOOL_FIELDS
from tool_registry.jsonschema import export_tool_schemas

pytestmark = pytest.mark.integration

STRING, MESSAGE = (
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
)
OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL


def chained_set(types: int, *, fields_per_type: int = 1, cycle: bool = False) -> bytes:
    """M0 -> M1 -> ... -> M<types-1> (-> M0 when `cycle`), each with `fields_per_type` string fields."""
    file = descriptor_pb2.FileDescriptorProto(name="deep.proto", package="deep.v1", syntax="proto3")
    for i in range(types):
        message = file.message_type.add(name=f"M{i}")
        for j in range(fields_per_type):
            message.field.add(name=f"f{j}", number=j + 1, type=STRING, label=OPTIONAL)
        if i + 1 < types or cycle:
            message.field.add(
                name="next",
                number=fields_per_type + 1,
                type=MESSAGE,
                type_name=f".deep.v1.M{(i + 1) % types}",
                label=OPTIONAL,
            )
    file.service.add(name="Deep").method.add(name="Call", input_type=".deep.v1.M0", output_type=".deep.v1.M0")
    return descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString()


def deep_spec(data: bytes) -> tool_pb2.ToolSpec:
    return tool_pb2.ToolSpec(
        file_descriptor_set=data, method="deep.v1.Deep/Call", name="deep_call", version="1.0.0"
    )


async def refusal(registry: Registry, data: bytes) -> list[tuple[str, str]]:
    """The violations of RegisterTool and of CheckCompatibility, which must agree."""
    answers = []
    for call in (
        registry.stub.RegisterTool(rs.RegisterToolRequest(tool=deep_spec(data))),
        registry.stub.CheckCompatibility(rs.CheckCompatibilityRequest(tool=deep_spec(data))),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        answers.append([(v.reason, v.description) for v in from_rpc_error(caught.value).violations])
    assert answers[0] == answers[1]
    return [(reason, description) for reason, description in answers[0]]


@pytest.mark.parametrize("cycle", [False, True], ids=["chain", "cycle"])
async def test_300_chained_message_types_are_refused_naming_the_limit(
    registry: Registry, cycle: bool
) -> None:
    [(reason, description)] = await refusal(registry, chained_set(300, cycle=cycle))
    assert reason == "TOO_DEEP"
    assert "nest 300 message types deep" in description and f"at most {MAX_MESSAGE_DEPTH}" in description


async def test_too_many_fields_are_refused_naming_the_limit(registry: Registry) -> None:
    [(reason, description)] = await refusal(registry, chained_set(10, fields_per_type=MAX_TOOL_FIELDS // 10))
    assert reason == "TOO_MANY_FIELDS"
    assert f"reach {MAX_TOOL_FIELDS + 9} fields" in description and "MAX_TOOL_FIELDS" in description


async def test_a_tool_at_the_limits_registers_and_exports_its_schema(backend_url: str) -> None:
    data = chained_set(
        MAX_MESSAGE_DEPTH, fields_per_type=MAX_TOOL_FIELDS // MAX_MESSAGE_DEPTH - 1, cycle=True
    )
    async with registry_at(backend_url, schema_exporter=export_tool_schemas) as registry:
        # Deadlines: a call stuck on the store fails here with its status instead of at the
        # suite's timeout (0.1 s on an idle machine).
        await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=deep_spec(data)), timeout=60)
        full = await registry.stub.GetTool(
            rs.GetToolRequest(name="deep_call", view=tool_pb2.TOOL_VIEW_FULL), timeout=60
        )
        compatible = await registry.stub.CheckCompatibility(
            rs.CheckCompatibilityRequest(tool=deep_spec(data)), timeout=60
        )
    assert '"next"' in full.input_schema_json
    assert compatible.compatible

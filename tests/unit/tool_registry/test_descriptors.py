from __future__ import annotations

from pathlib import Path

import protovalidate
import pytest
from google.protobuf import descriptor_pb2

from agentmesh.kit.errors import InvalidArgument
from agentmesh.v1 import agent_service_pb2, tool_options_pb2
from tool_registry.descriptors import (
    MAX_DESCRIPTOR_SET_BYTES,
    file_descriptor_set_of,
    load_tool_schema,
    ordered_files,
    parse_descriptor_set,
    split_method_name,
    tool_methods,
)
from tool_registry.protoc import ProtoCompileError, compile_protos

PROTOS = Path(__file__).resolve().parents[2] / "fixtures" / "protos"
INVENTORY = PROTOS / "shop" / "v1" / "inventory.proto"


@pytest.fixture(scope="module")
def inventory_set() -> descriptor_pb2.FileDescriptorSet:
    return compile_protos([INVENTORY], [PROTOS])


def test_compile_includes_imports_and_source_info(inventory_set: descriptor_pb2.FileDescriptorSet) -> None:
    names = [f.name for f in inventory_set.file]
    assert names[-1] == "shop/v1/inventory.proto"
    assert {
        "agentmesh/v1/tool_options.proto",
        "buf/validate/validate.proto",
        "google/protobuf/timestamp.proto",
    } <= set(names)
    assert inventory_set.file[-1].source_code_info.location


def test_loads_the_tool_method_and_its_option(inventory_set: descriptor_pb2.FileDescriptorSet) -> None:
    schema = load_tool_schema(inventory_set.SerializeToString(), "shop.v1.Inventory/Reserve")
    assert schema.method_name == "shop.v1.Inventory/Reserve"
    assert schema.grpc_path == "/shop.v1.Inventory/Reserve"
    options = schema.options()
    assert options is not None and options.name == "inventory_reserve"
    assert options.side_effect == tool_options_pb2.SIDE_EFFECT_KEYED
    assert schema.description() == "Reserves stock for an order."
    assert schema.comments["shop.v1.ReserveRequest.qty"] == "How many."
    assert tool_methods(inventory_set) == ["shop.v1.Inventory/Reserve"]


def test_dynamic_messages_validate_with_protovalidate(
    inventory_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    schema = load_tool_schema(inventory_set, "shop.v1.Inventory.Reserve")
    bad = schema.request_class(order_id="ab", sku="abc", qty=0)
    violations = protovalidate.collect_violations(bad)
    assert sorted(v.proto.field.elements[0].field_name for v in violations) == ["order_id", "qty", "sku"]
    good = schema.request_class(order_id="ORD-1", sku="ABC-001", qty=2)
    assert protovalidate.collect_violations(good) == []


def test_streaming_method_is_refused_clearly(inventory_set: descriptor_pb2.FileDescriptorSet) -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_tool_schema(inventory_set, "shop.v1.Inventory/WatchStock")
    assert "server-streaming" in caught.value.violations[0].description
    assert "unary" in caught.value.violations[0].description


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("shop.v1.Inventory/Nope", "has no method 'Nope'; it has: Check, Reserve, WatchStock"),
        ("shop.v1.Nothing/Reserve", "the set defines: shop.v1.Inventory"),
        ("Reserve", "is not a full method name"),
    ],
)
def test_missing_method_or_service(
    inventory_set: descriptor_pb2.FileDescriptorSet, method: str, expected: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_tool_schema(inventory_set, method)
    assert expected in caught.value.violations[0].description
    assert caught.value.reason == "INVALID_SCHEMA"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "is required"),
        (b"\xff\x00garbage\x12", "is not a serialized google.protobuf.FileDescriptorSet"),
        (b"x" * (MAX_DESCRIPTOR_SET_BYTES + 1), "at most"),
    ],
)
def test_garbage_is_invalid_argument(data: bytes, expected: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_descriptor_set(data)
    assert expected in caught.value.violations[0].description


def test_not_self_contained(inventory_set: descriptor_pb2.FileDescriptorSet) -> None:
    partial = descriptor_pb2.FileDescriptorSet(file=[inventory_set.file[-1]])
    with pytest.raises(InvalidArgument) as caught:
        ordered_files(partial)
    described = " ".join(v.description for v in caught.value.violations)
    assert "imports 'buf/validate/validate.proto'" in described
    assert "--include_imports" in described


def test_compile_errors_carry_protoc_diagnostics() -> None:
    with pytest.raises(ProtoCompileError) as caught:
        compile_protos([PROTOS / "broken.proto"])
    assert "broken.proto:3" in caught.value.message
    with pytest.raises(ProtoCompileError, match=r"does/not/exist\.proto"):
        compile_protos([PROTOS / "missing_import.proto"])
    with pytest.raises(ProtoCompileError, match="no such file"):
        compile_protos([PROTOS / "nope.proto"])


def test_descriptor_set_from_generated_code_is_loadable() -> None:
    fds = file_descriptor_set_of(agent_service_pb2.DESCRIPTOR)
    assert [f.name for f in fds.file][-1] == "agentmesh/v1/agent_service.proto"
    schema = load_tool_schema(fds, "agentmesh.v1.AgentService/Run")
    assert schema.input_type.full_name == "agentmesh.v1.RunRequest"


def test_split_method_name_forms() -> None:
    assert split_method_name("/a.b.Svc/M") == ("a.b.Svc", "M")
    assert split_method_name("a.b.Svc.M") == ("a.b.Svc", "M")

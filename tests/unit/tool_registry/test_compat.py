from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tool_registry.compat import check_compatibility, required_by_rules
from tool_registry.descriptors import ToolSchema, load_tool_schema
from tool_registry.protoc import compile_protos

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
REGISTRY_CASES = FIXTURES / "compat_registry"
BUF_CASES = FIXTURES / "compat"
METHOD = "compat.v1.Tool/Call"
FDP = descriptor_pb2.FieldDescriptorProto


def _load(directory: Path) -> ToolSchema:
    return load_tool_schema(compile_protos([directory / "compat" / "v1" / "tool.proto"], [directory]), METHOD)


# -- registry-only rules (beyond buf; kept out of the buf comparison) --------------

REGISTRY = json.loads((REGISTRY_CASES / "cases.json").read_text())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_only_rules(name: str) -> None:
    case = REGISTRY_CASES / name
    violations = check_compatibility(_load(case / "before"), _load(case / "after"))
    expected = REGISTRY[name]
    if expected["expect"] == "ok":
        assert violations == []
    else:
        assert [v.rule for v in violations] == [expected["rule"]], violations


def test_violations_name_path_rule_and_fix() -> None:
    case = BUF_CASES / "delete_field"
    (violation,) = check_compatibility(_load(case / "before"), _load(case / "after"))
    assert violation.path == "compat.v1.CallRequest.count"
    assert violation.rule == "FIELD_NO_DELETE"
    assert "`reserved 2;`" in violation.message and '`reserved "count";`' in violation.message


def test_a_deleted_response_field_is_what_old_clients_read() -> None:
    case = BUF_CASES / "response_field_deleted"
    (violation,) = check_compatibility(_load(case / "before"), _load(case / "after"))
    assert violation.rule == "FIELD_NO_DELETE"
    assert "old clients still read it" in violation.message, violation.message
    (request_side,) = check_compatibility(
        _load(BUF_CASES / "delete_field" / "before"), _load(BUF_CASES / "delete_field" / "after")
    )
    assert "old clients still send it" in request_side.message, request_side.message


@pytest.mark.parametrize(
    "name", ["repeated_to_singular", "singular_to_repeated", "repeated_message_to_singular"]
)
def test_a_cardinality_change_is_one_finding(name: str) -> None:
    """No FIELD_SAME_DEFAULT beside it: a list has no default to compare with a scalar's."""
    case = BUF_CASES / name
    violations = check_compatibility(_load(case / "before"), _load(case / "after"))
    assert [v.rule for v in violations] == ["FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY"], violations


def test_one_violation_per_problem() -> None:
    before = _load(BUF_CASES / "identical" / "before")
    fds = copy.deepcopy(before.file_set)
    request = next(m for m in fds.file[-1].message_type if m.name == "CallRequest")
    by_name = {f.name: f for f in request.field}
    by_name["count"].type = FDP.TYPE_STRING  # retyped
    by_name["id"].name = "ident"  # renamed, and its JSON name with it
    by_name["id"].json_name = "ident"
    request.field.remove(by_name["flag"])  # deleted
    after = load_tool_schema(fds, METHOD)
    rules = sorted((v.path, v.rule) for v in check_compatibility(before, after))
    assert rules == [
        ("compat.v1.CallRequest.count", "FIELD_WIRE_JSON_COMPATIBLE_TYPE"),
        ("compat.v1.CallRequest.flag", "FIELD_NO_DELETE"),
        ("compat.v1.CallRequest.ident", "FIELD_SAME_JSON_NAME"),
        ("compat.v1.CallRequest.ident", "FIELD_SAME_NAME"),
    ]


def test_required_by_rules_reads_protovalidate_options() -> None:
    schema = _load(REGISTRY_CASES / "required_added" / "after")
    fields = schema.input_type.fields_by_name
    assert required_by_rules(fields["id"])
    assert required_by_rules(fields["code"])  # min_len = 2
    assert not required_by_rules(fields["note"])  # max_len only
    assert not required_by_rules(fields["tags"])


# -- properties ----------------------------------------------------------------

BASE = _load(BUF_CASES / "identical" / "before")
SCALARS = [FDP.TYPE_STRING, FDP.TYPE_INT32, FDP.TYPE_BOOL, FDP.TYPE_BYTES, FDP.TYPE_DOUBLE, FDP.TYPE_INT64]
SWAPS = {
    FDP.TYPE_INT32: FDP.TYPE_UINT32,
    FDP.TYPE_UINT32: FDP.TYPE_INT32,
    FDP.TYPE_INT64: FDP.TYPE_UINT64,
    FDP.TYPE_FIXED32: FDP.TYPE_SFIXED32,
    FDP.TYPE_SFIXED64: FDP.TYPE_FIXED64,
}


def _file(fds: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorProto:
    return fds.file[-1]


def _free_number(message: descriptor_pb2.DescriptorProto) -> int:
    used = {f.number for f in message.field}
    for r in message.reserved_range:
        used.update(range(r.start, r.end))
    return max(used | {0}) + 1


def _compatible_edit(fds: descriptor_pb2.FileDescriptorSet, data: st.DataObject) -> str:
    file = _file(fds)
    kind = data.draw(
        st.sampled_from(
            [
                "add_field",
                "add_enum_value",
                "add_message",
                "reserve_removed",
                "comment",
                "swap_type",
                "add_reserved",
                "add_oneof_field",
                "optional_keyword",
            ]
        )
    )
    message = data.draw(st.sampled_from(list(file.message_type)))
    if kind == "add_field":
        number = _free_number(message)
        message.field.add(
            name=f"added_{number}",
            number=number,
            type=data.draw(st.sampled_from(SCALARS)),
            label=data.draw(st.sampled_from([FDP.LABEL_OPTIONAL, FDP.LABEL_REPEATED])),
            json_name=f"added{number}",
        )
    elif kind == "add_enum_value":
        enum = data.draw(st.sampled_from(list(file.enum_type)))
        number = max(v.number for v in enum.value) + data.draw(st.integers(1, 50))
        enum.value.add(name=f"{enum.name.upper()}_NEW_{number}", number=number)
    elif kind == "add_message":
        new = file.message_type.add(name=f"Added{len(file.message_type)}")
        new.field.add(name="v", number=1, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL, json_name="v")
        number = _free_number(message)
        message.field.add(
            name=f"msg_{number}",
            number=number,
            type=FDP.TYPE_MESSAGE,
            type_name=f".compat.v1.{new.name}",
            label=FDP.LABEL_OPTIONAL,
            json_name=f"msg{number}",
        )
    elif kind == "reserve_removed":
        plain = [f for f in message.field if not f.HasField("oneof_index")]
        if plain:
            field = data.draw(st.sampled_from(plain))
            message.field.remove(field)
            message.reserved_range.add(start=field.number, end=field.number + 1)
            message.reserved_name.append(field.name)
    elif kind == "comment":
        location = file.source_code_info.location.add(path=[4, 0], span=[0, 0, 1])
        location.leading_comments = data.draw(st.text(max_size=40))
    elif kind == "swap_type":
        swappable = [f for f in message.field if f.type in SWAPS]
        if swappable:
            field = data.draw(st.sampled_from(swappable))
            field.type = SWAPS[field.type]
    elif kind == "add_reserved":
        start = _free_number(message) + 100
        message.reserved_range.add(start=start, end=start + data.draw(st.integers(1, 10)))
    elif kind == "add_oneof_field":
        if message.oneof_decl and not any(f.proto3_optional for f in message.field):
            number = _free_number(message)
            message.field.add(
                name=f"alt_{number}",
                number=number,
                type=FDP.TYPE_STRING,
                label=FDP.LABEL_OPTIONAL,
                oneof_index=0,
                json_name=f"alt{number}",
            )
    elif kind == "optional_keyword":
        plain = [
            f
            for f in message.field
            if not f.HasField("oneof_index") and f.label == FDP.LABEL_OPTIONAL and f.type in SCALARS
        ]
        if plain:
            field = data.draw(st.sampled_from(plain))
            field.proto3_optional = True
            # synthetic oneofs come after the real ones
            message.oneof_decl.add(name=f"_{field.name}")
            field.oneof_index = len(message.oneof_decl) - 1
    return kind


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compatible_edits_are_never_flagged(data: st.DataObject) -> None:
    fds = copy.deepcopy(BASE.file_set)
    edits = [_compatible_edit(fds, data) for _ in range(data.draw(st.integers(1, 5)))]
    after = load_tool_schema(fds, METHOD)
    assert check_compatibility(BASE, after) == [], edits


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_breaking_edits_are_always_flagged(data: st.DataObject) -> None:
    fds = copy.deepcopy(BASE.file_set)
    file = _file(fds)
    message = data.draw(st.sampled_from([m for m in file.message_type if m.field]))
    field = data.draw(st.sampled_from(list(message.field)))
    kind = data.draw(st.sampled_from(["delete", "renumber", "retype", "rename", "repeat"]))
    if kind == "delete":
        message.field.remove(field)
        if field.HasField("oneof_index") and not any(
            f.oneof_index == field.oneof_index for f in message.field if f.HasField("oneof_index")
        ):
            return  # removing a oneof's last member would leave an empty oneof (not loadable)
    elif kind == "renumber":
        field.number = _free_number(message) + 1000
    elif kind == "retype":
        field.type = FDP.TYPE_DOUBLE if field.type != FDP.TYPE_DOUBLE else FDP.TYPE_FLOAT
        field.ClearField("type_name")
    elif kind == "rename":
        field.name = field.name + "_renamed"
        field.json_name = field.json_name + "Renamed"
    elif kind == "repeat":
        if field.label == FDP.LABEL_REPEATED or field.HasField("oneof_index"):
            return
        field.label = FDP.LABEL_REPEATED
    after = load_tool_schema(fds, METHOD)
    assert check_compatibility(BASE, after), (kind, message.name, field.name)

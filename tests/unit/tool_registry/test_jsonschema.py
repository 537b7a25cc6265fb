from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from agentmesh.kit.errors import InvalidArgument
from tests.support.schema_check import validator_for
from tool_registry.descriptors import load_tool_schema
from tool_registry.jsonschema import (
    DIALECT,
    export_tool_schemas,
    function_definition,
    tool_json_schemas,
)
from tool_registry.protoc import compile_protos

METHODS = ["Scalars", "Shapes", "Rules", "Described", "Tree"]
# Keywords the common model APIs choke on; the exporter must never emit them.
REFUSED_KEYWORDS = {
    "dependentSchemas",
    "dependentRequired",
    "if",
    "then",
    "else",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$anchor",
    "prefixItems",
    "contentMediaType",
}


def _keywords(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            if key not in ("properties", "$defs", "enum", "const"):
                found |= _keywords(value)
            elif key in ("properties", "$defs"):
                for sub in value.values():
                    found |= _keywords(sub)
    elif isinstance(node, list):
        for item in node:
            found |= _keywords(item)
    return found


@pytest.mark.parametrize("method", METHODS)
def test_schemas_are_valid_2020_12_json_with_defs_only_at_the_root(method: str, rich_set: Any) -> None:
    schema = load_tool_schema(rich_set, f"rich.v1.Rich/{method}")
    for exported in tool_json_schemas(schema):
        assert exported["$schema"] == DIALECT
        assert exported["type"] == "object"
        Draft202012Validator.check_schema(exported)
        keywords = _keywords({k: v for k, v in exported.items() if k != "$defs"})
        assert "$defs" not in keywords  # only at the root
        assert not keywords & REFUSED_KEYWORDS
    text_in, _ = export_tool_schemas(schema)
    assert json.loads(text_in) == tool_json_schemas(schema)[0]
    json.loads(text_in, parse_constant=lambda name: pytest.fail(f"{name} in the schema"))


def test_comments_become_descriptions(rich_set: Any) -> None:
    inputs, _ = tool_json_schemas(load_tool_schema(rich_set, "rich.v1.Rich/Shapes"))
    props = inputs["properties"]
    assert inputs["description"] == "Collections, oneofs, nesting, well-known types."
    assert props["counts"]["description"] == "Map with string keys."
    assert "COLOR_RED: Red." in props["colors"]["items"]["description"]
    assert props["at"]["description"].startswith("When.")


def test_proto_names_and_json_forms(rich_set: Any) -> None:
    inputs, outputs = tool_json_schemas(load_tool_schema(rich_set, "rich.v1.Rich/Scalars"))
    props = inputs["properties"]
    assert "someCamelName" in props  # the proto name, whatever its case
    assert props["f_int32"]["type"] == "integer"
    assert props["f_int64"]["$ref"] == "#/$defs/int64"
    assert inputs["$defs"]["int64"]["type"] == ["integer", "string"]
    assert props["f_bytes"]["contentEncoding"] == "base64"
    assert props["f_enum"]["enum"] == ["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_GREEN", "COLOR_BLUE"]
    assert {"enum": ["NaN", "Infinity", "-Infinity"]} in props["f_double"]["anyOf"]
    assert inputs["additionalProperties"] is False
    assert outputs["properties"]["f_int64"]["type"] == "string"  # what MessageToDict emits


def test_oneofs_nesting_recursion_and_well_known_types(rich_set: Any) -> None:
    inputs, _ = tool_json_schemas(load_tool_schema(rich_set, "rich.v1.Rich/Shapes"))
    pairs = inputs["not"]["anyOf"]
    assert {"required": ["card", "account"]} in pairs and {"required": ["email", "phone"]} in pairs
    assert {"required": ["card", "email"]} not in pairs
    props = inputs["properties"]
    assert props["items"]["items"] == {
        "$ref": "#/$defs/rich.v1.Item",
        "description": "Repeated messages.",
    } or (props["items"]["items"]["$ref"] == "#/$defs/rich.v1.Item")
    assert props["at"]["format"] == "date-time"
    assert props["maybe_int"]["type"] == ["integer", "null"]
    assert props["anything"]["$ref"] == "#/$defs/google.protobuf.Value"
    assert props["nothing"] == {
        "type": "object",
        "additionalProperties": False,
        "description": "Empty message.",
    }
    tree, _ = tool_json_schemas(load_tool_schema(rich_set, "rich.v1.Rich/Tree"))
    assert tree["properties"]["children"]["items"] == {"$ref": "#"}


def test_rules_become_keywords_and_zero_violating_fields_are_required(rich_set: Any) -> None:
    inputs, _ = tool_json_schemas(load_tool_schema(rich_set, "rich.v1.Rich/Rules"))
    props = inputs["properties"]
    assert (props["qty"]["minimum"], props["qty"]["maximum"]) == (1, 100)
    assert props["priority"]["anyOf"] == [{"minimum": 21}, {"maximum": 9}]
    assert props["sku"]["pattern"] == "^[A-Z]{3}-[0-9]{3}$"
    assert props["email"]["format"] == "email"
    assert props["tags"]["uniqueItems"] is True and props["tags"]["minItems"] == 1
    assert props["limits"]["propertyNames"] == {"pattern": "^[a-z]+$"}
    assert "COLOR_UNSPECIFIED" not in props["color"]["enum"]
    required = set(inputs["required"])
    assert {"order_id", "qty", "note", "item", "tags", "color"} <= required
    assert not {"discount", "coupon", "amount_cents", "maybe_limit", "ratio"} & required
    assert inputs["anyOf"] == [{"required": ["target_id"]}, {"required": ["target_name"]}]


def test_rules_json_schema_cannot_state_are_described(rich_set: Any) -> None:
    inputs, _ = tool_json_schemas(load_tool_schema(rich_set, "rich.v1.Rich/Described"))
    props = inputs["properties"]
    assert "first and last must differ" in inputs["description"]
    assert "At most 8 bytes in UTF-8." in props["short"]["description"]
    assert props["link"]["format"] == "uri"
    assert "gt_now" in props["due"]["description"]
    assert "(?i)^abc$" in props["code"]["description"]
    assert "Decoded bytes must start with" in props["data"]["description"]


def test_function_definition_has_the_openai_shape(rich_set: Any) -> None:
    inputs, _ = tool_json_schemas(load_tool_schema(rich_set, "rich.v1.Rich/Tree"))
    definition = function_definition("rich_tree", "A tree.", inputs)
    assert definition["type"] == "function"
    assert definition["function"]["name"] == "rich_tree"
    assert "$schema" not in definition["function"]["parameters"]
    assert definition["function"]["parameters"]["properties"] == inputs["properties"]


def test_any_in_a_request_is_refused_with_a_reason(tmp_path: Path) -> None:
    proto = tmp_path / "anyreq.proto"
    proto.write_text(
        'syntax = "proto3"; package t.v1; import "google/protobuf/any.proto";\n'
        "message Req { google.protobuf.Any payload = 1; }\n"
        "message Res { google.protobuf.Any payload = 1; }\n"
        "service S { rpc Do(Req) returns (Res); rpc Back(Res) returns (Res); }\n"
    )
    fds = compile_protos([proto])
    with pytest.raises(InvalidArgument) as caught:
        tool_json_schemas(load_tool_schema(fds, "t.v1.S/Do"))
    assert "oneof" in caught.value.violations[0].description
    assert caught.value.reason == "INVALID_SCHEMA"


def test_rules_that_do_not_compile_are_refused(tmp_path: Path) -> None:
    proto = tmp_path / "bad.proto"
    proto.write_text(
        'syntax = "proto3"; package t.v1; import "buf/validate/validate.proto";\n'
        "message Req { string name = 1 [(buf.validate.field).int32.gt = 1]; }\n"
        "service S { rpc Do(Req) returns (Req); }\n"
    )
    with pytest.raises(InvalidArgument) as caught:
        tool_json_schemas(load_tool_schema(compile_protos([proto]), "t.v1.S/Do"))
    assert caught.value.reason == "INVALID_SCHEMA"


def test_examples_from_the_schema_itself(rich_set: Any) -> None:
    validator = validator_for(tool_json_schemas(load_tool_schema(rich_set, "rich.v1.Rich/Shapes"))[0])
    assert validator.is_valid(
        {"ids": [1, "2"], "names_by_id": {"-5": "x"}, "at": "2024-02-29T10:00:00+01:00"}
    )
    assert not validator.is_valid({"ids": ["02"]})
    assert not validator.is_valid({"card": "1", "account": 2})
    assert not validator.is_valid({"at": "2023-02-29T10:00:00Z"})
    assert not validator.is_valid({"mask": "foo_bar"})
    assert validator.is_valid({"maybe_int": None, "anything": None, "list": [None, 1, {"a": [True]}]})

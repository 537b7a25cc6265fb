"""The exported input schema and the argument converter agree, in both directions.

- every instance drawn from the schema (and accepted by a Draft 2020-12
  validator with ECMA-262 patterns and format checking) converts with
  json_format.ParseDict and passes protovalidate;
- for near-misses of valid instances (a field replaced by an awkward value,
  removed, or an unknown field added), the validator and the converter give
  the same verdict.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmesh.kit.errors import InvalidArgument
from tests.support.schema_check import validator_for
from tests.support.schema_strategies import instances
from tool_registry.arguments import ArgumentConverter
from tool_registry.descriptors import load_tool_schema
from tool_registry.jsonschema import tool_json_schemas
from tool_registry.protoc import compile_protos

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
PROTOS = Path(__file__).resolve().parents[2] / "fixtures" / "protos"
CASES = [
    ("rich", "rich.v1.Rich/Scalars", 60),
    ("rich", "rich.v1.Rich/Shapes", 60),
    ("rich", "rich.v1.Rich/Rules", 10),
    ("rich", "rich.v1.Rich/Tree", 60),
    ("shop", "shop.v1.Inventory/Reserve", 60),
    ("payments", "payments.v1.Payments/Refund", 30),
    ("shipping", "shipping.v1.Shipping/CreateShipment", 30),
    ("shipping", "shipping.v1.Shipping/GetShipments", 30),
]
# The same with many more examples (make test runs the CI subset; pytest -m slow runs these).
SLOW_CASES = [pytest.param(kind, method, 500, marks=pytest.mark.slow) for kind, method, _ in CASES]

AWKWARD: list[Any] = [
    None,
    True,
    False,
    0,
    -0.0,
    1,
    -1,
    1.0,
    1.5,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    -(2**63) - 1,
    1e300,
    1e39,
    3.4028235e38,
    -3.4028236e38,
    "0",
    "1",
    "01",
    "-0",
    "+1",
    "1.0",
    "1_0",
    " 1",
    "9223372036854775808",
    "18446744073709551615",
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "",
    "a",
    "ab",
    "ABC-001",
    "ABC-001\n",
    "x" * 41,
    "YQ==",
    "YQ",
    "YR==",
    "YWJj",
    "YWI=",
    "Y2Q=",
    "!!!!",
    "2024-05-01T12:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-05-01T12:00:00.1234567891Z",
    "1.5s",
    "1.5S",
    "-0.5s",
    "fooBar,a.b",
    "foo_bar",
    "COLOR_RED",
    "COLOR_UNSPECIFIED",
    "COLOR_PURPLE",
    2,
    "S",
    "XL",
    "a@b.co",
    "a@b@c",
    "host.example",
    "-bad-.host",
    "1.2.3.4",
    "01.2.3.4",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
    [],
    [1],
    [1, 1],
    ["1", "1"],
    [1, "1"],
    [""],
    ["a", "a"],
    [None],
    {},
    {"a": 1},
    {"1": "x"},
    {"01": "x"},
    {"true": {}},
    {"yes": {}},
    {"a": None},
    {"sku": "ABC-001"},
]


@functools.cache
def _set(kind: str) -> bytes:
    if kind in ("rich", "shop"):
        path = {
            "rich": PROTOS / "rich" / "v1" / "rich.proto",
            "shop": PROTOS / "shop" / "v1" / "inventory.proto",
        }
        return compile_protos([path[kind]], [PROTOS]).SerializeToString()
    return compile_protos([EXAMPLES / kind / f"{kind}.proto"]).SerializeToString()


@functools.cache
def _case(kind: str, method: str) -> tuple[Any, Any, ArgumentConverter, dict[str, Any]]:
    schema = load_tool_schema(_set(kind), method)
    input_schema, _ = tool_json_schemas(schema)
    return schema, validator_for(input_schema), ArgumentConverter(schema), input_schema


def _accepts(converter: ArgumentConverter, value: Any) -> tuple[bool, Any]:
    try:
        converter.convert(json.dumps(value))
    except InvalidArgument as exc:
        return False, exc.violations
    return True, None


def _settings(examples: int) -> Any:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize(("kind", "method", "examples"), [*CASES, *SLOW_CASES])
def test_every_schema_instance_converts_and_validates(kind: str, method: str, examples: int) -> None:
    schema, validator, converter, input_schema = _case(kind, method)

    @_settings(examples)
    @given(instances(input_schema))
    def check(value: Any) -> None:
        if not validator.is_valid(value):
            return  # the strategy over-approximates; only schema-valid instances count
        accepted, violations = _accepts(converter, value)
        assert accepted, f"schema accepts {value!r} but the converter refuses it: {violations}"
        # The converter's direct build (flat scalar requests) and ParseDict make the same message.
        text = json.dumps(value)
        expected = json_format.ParseDict(
            json.loads(text), schema.request_class(), descriptor_pool=schema.pool
        )
        assert converter.convert(text) == expected

    check()


def _mutate(value: dict[str, Any], data: st.DataObject, input_schema: dict[str, Any]) -> dict[str, Any]:
    names = list(input_schema.get("properties", {}))
    choice = data.draw(st.sampled_from(["replace", "replace", "replace", "drop", "unknown", "nested"]))
    mutated = dict(value)
    if choice == "drop" and mutated:
        mutated.pop(data.draw(st.sampled_from(sorted(mutated))))
    elif choice == "unknown":
        mutated[data.draw(st.sampled_from(["bogus", "orderId", "someCamelName", "fSomething"]))] = 1
    elif choice == "nested":
        key = data.draw(st.sampled_from(names))
        mutated[key] = data.draw(st.sampled_from(AWKWARD[-12:]))
    elif names:
        key = data.draw(st.sampled_from(names))
        mutated[key] = data.draw(st.sampled_from(AWKWARD))
    return mutated


@pytest.mark.parametrize(("kind", "method", "examples"), [*CASES, *SLOW_CASES])
def test_schema_and_converter_agree_on_near_misses(kind: str, method: str, examples: int) -> None:
    _, validator, converter, input_schema = _case(kind, method)

    @_settings(examples * 2)
    @given(instances(input_schema), st.data())
    def check(value: Any, data: st.DataObject) -> None:
        if not isinstance(value, dict):
            return
        mutated = _mutate(value, data, input_schema)
        schema_says = bool(validator.is_valid(mutated))
        converter_says, violations = _accepts(converter, mutated)
        assert schema_says == converter_says, (
            f"schema {'accepts' if schema_says else 'refuses'} {mutated!r}, converter "
            f"{'accepts' if converter_says else 'refuses'} ({violations})"
        )

    check()

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from tool_registry.arguments import ArgumentConverter, violations_observation
from tool_registry.descriptors import load_tool_schema

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def rules(rich_set: Any) -> ArgumentConverter:
    return ArgumentConverter(load_tool_schema(rich_set, "rich.v1.Rich/Rules"))


@pytest.fixture(scope="module")
def shapes(rich_set: Any) -> ArgumentConverter:
    return ArgumentConverter(load_tool_schema(rich_set, "rich.v1.Rich/Shapes"))


@pytest.fixture(scope="module")
def reserve(shop_set: Any) -> ArgumentConverter:
    return ArgumentConverter(load_tool_schema(shop_set, "shop.v1.Inventory/Reserve"))


def _violations(converter: ArgumentConverter, arguments: Any) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as caught:
        converter.convert(arguments)
    assert caught.value.violations
    return list(caught.value.violations)


def test_valid_arguments_become_the_request(reserve: ArgumentConverter) -> None:
    request = reserve.convert('{"order_id": "ORD-1", "sku": "ABC-001", "qty": 2}')
    assert (request.order_id, request.sku, request.qty) == ("ORD-1", "ABC-001", 2)
    assert reserve.convert({"order_id": "ORD-1", "sku": "ABC-001", "qty": 2.0}).qty == 2


@pytest.mark.parametrize(
    ("arguments", "field", "words"),
    [
        ('{"order_id": "ORD-1", "sku": "ABC-001", "qty": 0}', "qty", "greater than 0"),
        ('{"order_id": "ORD-1", "sku": "abc", "qty": 1}', "sku", "pattern"),
        ('{"order_id": "ORD-1", "sku": "ABC-001", "qty": "2"}', "qty", "must be an integer"),
        ('{"order_id": "ORD-1", "sku": "ABC-001", "qty": 1, "note": 1}', "note", "unknown field"),
        ('{"orderId": "ORD-1", "sku": "ABC-001", "qty": 1}', "orderId", "write it as 'order_id'"),
        ('{"order_id": null, "sku": "ABC-001", "qty": 1}', "order_id", "must not be null"),
        ('{"sku": "ABC-001", "qty": 1}', "order_id", "at least 3 characters"),
        ('{"order_id": "ORD-1", "sku": "ABC-001", "qty": 1e400}', "qty", "must be an integer"),
        ('{"order_id": "ORD-1", "sku": "ABC-001", "qty": 4294967296}', "qty", "between"),
        ('{"order_id": "ORD-1", "sku": "ABC-001", "qty": true}', "qty", "must be an integer"),
        ("{", "", "not valid JSON"),
        ("[1, 2]", "", "must be an object"),
        ('{"qty": NaN}', "", "NaN is not JSON"),
        ('{"qty": 1, "qty": 2}', "", "duplicate key"),
        ('"\\ud800"', "", "must be an object"),
    ],
)
def test_bad_arguments_name_the_field_and_the_problem(
    reserve: ArgumentConverter, arguments: str, field: str, words: str
) -> None:
    violations = _violations(reserve, arguments)
    assert any(v.field == field and words in v.description for v in violations), violations


def test_nested_paths_are_json_path_like(shapes: ArgumentConverter, rules: ArgumentConverter) -> None:
    violations = _violations(shapes, {"items": [{"sku": "a"}, {"qty": "x"}], "counts": {"a": "b"}})
    assert {v.field for v in violations} == {"items[1].qty", 'counts["a"]'}
    violations = _violations(rules, {"limits": {"AB": -1}, "tags": [""]})
    fields = {v.field for v in violations}
    assert 'limits["AB"] (key)' in fields and 'limits["AB"]' in fields and "tags[0]" in fields


def test_oneof_members_are_alternatives(shapes: ArgumentConverter) -> None:
    violations = _violations(shapes, {"card": "1", "account": 2})
    assert "at most one of card, account" in violations[0].description


def test_huge_and_deep_input_is_refused_before_parsing(reserve: ArgumentConverter) -> None:
    huge = json.dumps({"order_id": "x" * (10 * 1024 * 1024)})
    assert "at most" in _violations(reserve, huge)[0].description
    deep = "[" * 100_000 + "]" * 100_000
    assert _violations(reserve, deep)[0].field == ""


def test_deeply_nested_recursive_messages_hit_the_depth_cap(rich_set: Any) -> None:
    tree = ArgumentConverter(load_tool_schema(rich_set, "rich.v1.Rich/Tree"), max_depth=10)
    node: dict[str, Any] = {}
    root = node
    for _ in range(20):
        node["next"] = {}
        node = node["next"]
    assert any("nested deeper" in v.description for v in _violations(tree, root))


def test_observation_is_compact_json_for_the_model(reserve: ArgumentConverter) -> None:
    violations = _violations(reserve, '{"order_id": "ORD-1", "sku": "ABC-001", "qty": 0}')
    observation = json.loads(violations_observation(violations))
    assert observation == {
        "error": "invalid_arguments",
        "violations": [{"field": "qty", "problem": "must be greater than 0 and less than or equal to 100"}],
    }


def _only_clean_outcomes(converter: ArgumentConverter, arguments: Any) -> None:
    violations: tuple[FieldViolation, ...] = ()
    try:
        converter.convert(arguments)
    except InvalidArgument as exc:
        violations = exc.violations
        assert violations
    json.loads(violations_observation(violations))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1"))))
def test_arbitrary_strings_give_violations_or_success(rich_set: Any, text: str) -> None:
    _only_clean_outcomes(ArgumentConverter(load_tool_schema(rich_set, "rich.v1.Rich/Shapes")), text)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(["ids", "counts", "at", "items", "anything", "card", "x"]), JSON))
def test_arbitrary_json_gives_violations_or_success(rich_set: Any, value: dict[str, Any]) -> None:
    converter = ArgumentConverter(load_tool_schema(rich_set, "rich.v1.Rich/Shapes"))
    _only_clean_outcomes(converter, value)
    _only_clean_outcomes(converter, json.dumps(value))

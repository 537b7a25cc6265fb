"""Domain specs: the shipped domains load; bad specs fail with the file and the field path."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from agents.spec import (
    DomainSpec,
    SpecError,
    agent_tool_name,
    load_spec,
    parse_spec,
    reference_markdown,
    spec_json_schema,
)

ROOT = Path(__file__).resolve().parents[3]
DOMAINS = ROOT / "agents" / "domains"


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "slug": "support",
        "display_name": "Support agent",
        "description": "Answers questions.",
        "system_prompt": "You help.",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("name", ["refunds", "fulfillment"])
def test_shipped_domains_load(name: str) -> None:
    spec = load_spec(DOMAINS / f"{name}.yaml")
    assert spec.slug == name
    assert spec.tools, "a demo domain needs tools"
    assert spec.default_limits.max_iterations <= spec.caps.max_iterations


def test_refunds_has_a_sanitizer_and_fulfillment_does_not() -> None:
    assert load_spec(DOMAINS / "refunds.yaml").sanitizer is not None
    assert load_spec(DOMAINS / "fulfillment.yaml").sanitizer is None


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec(minimal())
    assert spec.caps.max_iterations == 12 and spec.caps.token_cap == 16384
    assert spec.default_limits == spec.caps
    assert spec.model.timeout == timedelta(seconds=60)
    assert spec.agent_tool == "agent_support"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2m", 120), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), (45, 45), ("7.5", 7.5)],
)
def test_durations(text: object, seconds: float) -> None:
    spec = parse_spec(minimal(caps={"deadline": text}))
    assert spec.caps.deadline.total_seconds() == seconds


def test_errors_name_the_source_and_every_field_path() -> None:
    data = minimal(
        slug="Bad_Slug",
        tools=[{"name": "Inventory-Check"}, {"name": "ok_tool", "version": "one"}],
        caps={"max_iterations": 0, "deadline": "soon"},
        modle={"name": "x"},
    )
    with pytest.raises(SpecError) as caught:
        parse_spec(data, "domains/bad.yaml")
    text = str(caught.value)
    assert text.startswith("domains/bad.yaml: invalid domain spec:")
    for path in ("slug", "tools.0.name", "tools.1.version", "caps.max_iterations", "caps.deadline", "modle"):
        assert f"\n  {path}:" in text, (path, text)
    assert "unknown field" in text


def test_defaults_above_caps_are_refused() -> None:
    with pytest.raises(SpecError, match=r"defaults.max_iterations: 20 is above caps.max_iterations \(5\)"):
        parse_spec(minimal(caps={"max_iterations": 5}, defaults={"max_iterations": 20}))


def test_duplicate_tools_and_self_delegation_are_refused() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(minimal(tools=[{"name": "a_tool"}, {"name": "a_tool"}, {"name": "agent_support"}]))
    assert "listed twice" in str(caught.value)
    assert "cannot delegate to itself" in str(caught.value)


@pytest.mark.parametrize("version", ["latest", "1.2.0", "^1.0", "~1.2", ">=1.0 <2.0", "1.x", "*", "^2"])
def test_version_ranges_accepted(version: str) -> None:
    assert parse_spec(minimal(tools=[{"name": "t", "version": version}])).tools[0].version == version


def test_sanitizer_schema_must_be_a_valid_object_schema() -> None:
    bad = {"prompt": "extract", "output_schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}
    with pytest.raises(SpecError, match=r"sanitizer.output_schema: not a valid JSON Schema"):
        parse_spec(minimal(sanitizer=bad))
    with pytest.raises(SpecError, match=r"must describe a JSON object"):
        parse_spec(minimal(sanitizer={"prompt": "p", "output_schema": {"type": "string"}}))


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("slug: a\ndescription: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml: not valid YAML at line \d+"):
        load_spec(path)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read domain spec"):
        load_spec(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(tmp_path / "list.yaml")


def test_agent_tool_name_replaces_hyphens() -> None:
    assert agent_tool_name("order-status") == "agent_order_status"


def test_json_schema_validates_the_shipped_specs() -> None:
    from jsonschema import Draft202012Validator

    schema = spec_json_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for path in DOMAINS.glob("*.yaml"):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path, [e.message for e in errors])


def test_published_reference_is_current() -> None:
    committed = (ROOT / "docs" / "domain-spec.md").read_text()
    assert committed == reference_markdown(), "run `agentmesh agent spec-schema > docs/domain-spec.md`"


def test_specs_are_immutable() -> None:
    spec = parse_spec(minimal())
    with pytest.raises(ValidationError, match="frozen"):
        spec.slug = "other"  # type: ignore[misc]
    assert isinstance(spec, DomainSpec)

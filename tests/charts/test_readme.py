"""Every value is documented, and the README's values table is generated from it."""

from __future__ import annotations

import yaml

from scripts import chart_readme
from tests.charts.chart import CHART_DIR


def test_every_value_has_a_param_comment_and_every_param_a_value() -> None:
    text = (CHART_DIR / "values.yaml").read_text()
    assert chart_readme.problems(yaml.safe_load(text), chart_readme.parse(text)) == []


def test_undocumented_values_are_reported() -> None:
    text = "## @param a.b B\na:\n  b: 1\n  c: 2\n## @param gone Nothing\n"
    assert chart_readme.problems(yaml.safe_load(text), chart_readme.parse(text)) == [
        "@param gone names no value in values.yaml",
        "a.c has no @param (document it or an enclosing key)",
    ]


def test_readme_values_table_is_current() -> None:
    assert chart_readme.main(["--check"]) == 0, "run `make chart-readme`"


def test_every_param_is_in_the_values_schema() -> None:
    import json

    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    text = (CHART_DIR / "values.yaml").read_text()
    for section in chart_readme.parse(text):
        for path, _ in section.params:
            node = schema
            for part in path.split("."):
                if "$ref" in node:
                    node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
                assert part in node.get("properties", {}), f"{path}: {part} missing from values.schema.json"
                node = node["properties"][part]

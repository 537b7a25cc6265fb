"""`agentmesh agent …` and `agentmesh run` argument handling (no servers needed for these paths)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.kit.net import free_port

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_validate_accepts_the_shipped_specs() -> None:
    result = runner.invoke(app, ["agent", "validate", str(ROOT / "agents" / "domains" / "refunds.yaml")])
    assert result.exit_code == 0, result.output
    assert "ok refunds" in result.output


def test_validate_names_the_bad_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "slug: Nope\ndisplay_name: x\ndescription: d\nsystem_prompt: p\ncaps: {max_iterations: 0}\n"
    )
    result = runner.invoke(app, ["agent", "validate", str(path)])
    assert result.exit_code == 1
    assert "slug" in result.output and "caps.max_iterations" in result.output


def test_spec_schema_prints_the_published_reference() -> None:
    result = runner.invoke(app, ["agent", "spec-schema"])
    assert result.exit_code == 0
    assert result.output == (ROOT / "docs" / "domain-spec.md").read_text()
    schema = json.loads(runner.invoke(app, ["agent", "spec-schema", "--json"]).output)
    assert schema["title"] == "agentmesh domain spec"


def test_run_refuses_a_bad_domain_name_with_usage_exit() -> None:
    result = runner.invoke(app, ["run", "Not A Domain", "do it"])
    assert result.exit_code == 2


def test_run_against_an_unreachable_agent_exits_3() -> None:
    result = runner.invoke(
        app, ["run", "fulfillment", "ship", "--target", f"127.0.0.1:{free_port()}", "--timeout", "3"]
    )
    assert result.exit_code == 3
    assert "is unreachable" in result.output


def test_run_with_an_unreachable_registry_exits_3() -> None:
    result = runner.invoke(app, ["run", "fulfillment", "ship", "--registry", f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 3
    assert "registry" in result.output

"""Each agent mounts a domain spec the agent accepts, under the slug the chart uses.

The agent validates AGENTMESH_DOMAIN_SPEC at start (agents/spec.py) and exits on
a bad spec, so a chart that renders one makes pods that crash-loop. The agent
also names its queue streams, consumer group and registry entry after the
spec's slug, while the chart names the Deployment, Services, KEDA triggers and
service name after the key under `agents:`: the two must be the same.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from agentmesh.kit.validation import DOMAIN_SLUG
from agents.spec import DomainSpec, SpecError, parse_spec
from memory import keys
from tests.charts.chart import CHART_DIR, RELEASE, VALUE_SETS, Render, render, render_values
from tests.charts.test_semantics import component, environ, main_container, mounted_file
from tests.charts.test_values_rejected import MODEL, SPEC_TEXT

SETS = sorted(VALUE_SETS)
REQUIRED = sorted(name for name, field in DomainSpec.model_fields.items() if field.is_required())


def agent_deployments(r: Render) -> list[dict[str, Any]]:
    return [d for d in r.of_kind("Deployment") if component(d) == "agent"]


def mounted_spec(r: Render, deployment: dict[str, Any]) -> str:
    """The text the agent reads at AGENTMESH_DOMAIN_SPEC, from the ConfigMap mounted there."""
    container = main_container(deployment)
    path = environ(container)["AGENTMESH_DOMAIN_SPEC"]
    volume, filename = mounted_file(deployment["spec"]["template"]["spec"], container, path)
    return str(r.get("ConfigMap", volume["configMap"]["name"])["data"][filename])


def agent_reads(text: str, where: str) -> DomainSpec:
    """What the agent's loader makes of the text (load_spec without the file)."""
    try:
        return parse_spec(yaml.safe_load(text), where)
    except SpecError as exc:  # pragma: no cover - the message is the point
        pytest.fail(str(exc))


@pytest.mark.parametrize("value_set", SETS)
def test_every_agent_mounts_a_spec_the_agent_accepts_under_its_key(value_set: str) -> None:
    r = render(value_set)
    enabled = {
        key
        for key, domain in r.values["agents"].items()
        if domain.get("enabled", r.values["agentDefaults"]["enabled"])
    }
    deployments = agent_deployments(r)
    assert {d["metadata"]["labels"]["agentmesh.io/domain"] for d in deployments} == enabled
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        key = deployment["metadata"]["labels"]["agentmesh.io/domain"]
        spec = agent_reads(mounted_spec(r, deployment), f"{value_set}: {name}")
        assert spec.slug == key, f"{name}: the agent would serve domain {spec.slug!r}"
        assert name.endswith(f"-agent-{spec.slug}")
        env = environ(main_container(deployment))
        assert env["AGENTMESH_SERVICE_NAME"] == spec.slug
        if "OTEL_SERVICE_NAME" in env:
            assert env["OTEL_SERVICE_NAME"] == spec.slug
        if r.has("ScaledObject", name):
            triggers = r.get("ScaledObject", name)["spec"]["triggers"]
            # KEDA must read the lag of the streams and the group the agent's queue uses.
            assert [t["metadata"]["stream"] for t in triggers] == [
                keys.queue(spec.slug, shard) for shard in range(r.values["queue"]["shards"])
            ]
            assert {t["metadata"]["consumerGroup"] for t in triggers} == {spec.slug}


@pytest.mark.parametrize("value_set", SETS)
def test_the_spec_checksum_is_of_the_mounted_text(value_set: str) -> None:
    """A changed spec (the slug the chart adds included) rolls the agent's pods."""
    r = render(value_set)
    for deployment in agent_deployments(r):
        mounted = mounted_spec(r, deployment)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        # The ConfigMap's `|` block ends the text with one newline the template does not emit.
        expected = hashlib.sha256(mounted.removesuffix("\n").encode()).hexdigest()
        assert annotations["checksum/spec"] == expected, deployment["metadata"]["name"]


def spec_mounted_for(given: dict[str, Any] | str, **domain: Any) -> str:
    """The spec text mounted for a domain `refunds` with this spec (and other values)."""
    rendered = render_values({**MODEL, "agents": {"refunds": {"spec": given, **domain}}})
    documents = yaml.safe_load_all(rendered["agentmesh/templates/configmap.yaml"])
    config_map = next(
        d for d in documents if d and d["metadata"]["name"] == f"{RELEASE}-agentmesh-agent-refunds"
    )
    return str(config_map["data"]["spec.yaml"])


def test_the_example_in_values_yaml_is_a_spec_the_agent_accepts() -> None:
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    after = lines[lines.index("agents: {}") + 1 :]
    commented = itertools.takewhile(lambda line: line.startswith("#"), after)
    example = yaml.safe_load("\n".join(line.removeprefix("#") for line in commented))
    assert list(example) == ["refunds", "conformance"], (
        "the examples are the commented-out block under `agents: {}`"
    )
    domain = example["refunds"]
    spec = agent_reads(spec_mounted_for(domain.pop("spec"), **domain), "values.yaml example")
    assert spec.slug == "refunds" and spec.tools


def test_the_conformance_domain_deploys_from_its_spec_file() -> None:
    """values.yaml's optional `conformance` example: its spec given as text (--set-file)."""
    text = (CHART_DIR.parents[1] / "agents" / "domains" / "conformance.yaml").read_text()
    rendered = render_values({**MODEL, "agents": {"conformance": {"spec": text}}})
    documents = [d for d in yaml.safe_load_all(rendered["agentmesh/templates/configmap.yaml"]) if d]
    (config_map,) = [
        d for d in documents if d["metadata"]["name"] == f"{RELEASE}-agentmesh-agent-conformance"
    ]
    spec = agent_reads(str(config_map["data"]["spec.yaml"]), "conformance.yaml")
    assert spec.slug == "conformance" and not spec.tools and spec.skills


def test_a_mapping_spec_without_a_slug_gets_the_key() -> None:
    given = yaml.safe_load(SPEC_TEXT)
    spec = agent_reads(spec_mounted_for(given), "mapping")
    assert spec.slug == "refunds"
    assert spec.model_dump(include=set(given)) == given


def test_a_text_spec_that_opens_a_document_gets_its_slug_after_the_marker() -> None:
    mounted = spec_mounted_for("---\n" + SPEC_TEXT)
    assert mounted == "---\nslug: refunds\n" + SPEC_TEXT
    assert agent_reads(mounted, "text").slug == "refunds"


def test_a_text_spec_with_the_right_slug_is_kept_as_given() -> None:
    given = "# Refunds\nslug: refunds\n" + SPEC_TEXT
    assert spec_mounted_for(given) == given


@pytest.mark.parametrize("field", [f for f in REQUIRED if f != "slug"])
def test_a_text_spec_without_a_field_the_agent_requires_is_refused(field: str) -> None:
    given = "".join(line + "\n" for line in SPEC_TEXT.splitlines() if not line.startswith(f"{field}:"))
    assert given != SPEC_TEXT
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(f"agents.refunds.spec has no {field}")):
        spec_mounted_for(given)


def test_the_templates_check_a_mapping_spec_when_the_schema_is_skipped(tmp_path: Path) -> None:
    """`helm install --skip-schema-validation` must still not render a spec the agent refuses."""
    chart_dir = tmp_path / "agentmesh"
    shutil.copytree(CHART_DIR, chart_dir)
    (chart_dir / "values.schema.json").unlink()
    chart = helm_python.Chart.load(chart_dir)
    given = {"description": "Refunds orders.", "system_prompt": "Refund it."}
    with pytest.raises(
        helm_python.HelmRenderError, match=re.escape("agents.refunds.spec has no display_name")
    ):
        chart.render({**MODEL, "agents": {"refunds": {"spec": given}}}, name=RELEASE)


def test_the_schema_knows_the_spec_fields_the_agent_knows() -> None:
    """values.schema.json lists DomainSpec's top-level fields by hand; keep it in step."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    spec_schema = schema["definitions"]["domainSpec"]
    assert set(spec_schema["properties"]) == set(DomainSpec.model_fields)
    assert spec_schema["additionalProperties"] is False
    # The slug may be left out: the chart supplies the key.
    assert sorted(spec_schema["required"]) == [f for f in REQUIRED if f != "slug"]
    assert spec_schema["properties"]["slug"]["pattern"] == DOMAIN_SLUG.pattern
    assert schema["properties"]["agents"]["propertyNames"]["pattern"] == DOMAIN_SLUG.pattern

"""The prometheus-adapter rule the chart can render for the HPA's in-flight metric.

The HPA asks the custom metrics API for a Pods metric by name; prometheus-adapter
answers from the Prometheus series its rule discovers (seriesQuery), maps to
pods (resources), names (name.matches / name.as) and queries (metricsQuery). The
rule must select the series the services really export and serve it under the
name the HPA asks for.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import pytest
import yaml

from agentmesh.kit import metrics
from tests.charts.chart import CHART_DIR, NAMESPACE, VALUE_SETS, Render, render, render_values

SETS = sorted(VALUE_SETS)
CONFIG_MAP = "mesh-agentmesh-prometheus-adapter"
SELECTOR = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<matchers>[^}]*)\}$")


def exported_gauge() -> tuple[str, list[str]]:
    """(series name, label names) of the in-flight gauge as /metrics exposes it."""
    (family,) = metrics.RPC_IN_FLIGHT.describe()
    assert family.type == "gauge"  # a gauge's samples carry the family name, no suffix
    return family.name, list(metrics.RPC_IN_FLIGHT._labelnames)


def adapter_rules(r: Render) -> list[dict[str, Any]]:
    config_map = r.get("ConfigMap", CONFIG_MAP)
    assert list(config_map["data"]) == ["config.yaml"], (
        "the adapter chart's rules.existing mounts config.yaml"
    )
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert list(config) == ["rules"], "custom-metrics rules only: no resource or external rules"
    return list(config["rules"])


def hpa_pods_metrics(r: Render) -> set[str]:
    return {
        m["pods"]["metric"]["name"]
        for hpa in r.of_kind("HorizontalPodAutoscaler")
        for m in hpa["spec"]["metrics"]
        if m["type"] == "Pods"
    }


def served_metric(rule: dict[str, Any], series: str) -> str | None:
    """The custom-metrics name the adapter gives `series` under this rule, if it discovers it."""
    selector = SELECTOR.match(rule["seriesQuery"])
    assert selector, rule["seriesQuery"]
    if selector["name"] != series:
        return None
    matches = rule["name"].get("matches") or ".*"
    if not re.search(matches, series):  # the adapter's implicit name filter
        return None
    return str(rule["name"].get("as") or series)


@pytest.mark.parametrize("value_set", SETS)
def test_the_rules_config_map_is_rendered_only_when_asked_for(value_set: str) -> None:
    r = render(value_set)
    settings = r.values["metrics"]["prometheusAdapterRules"]
    rendered = [c for c in r.of_kind("ConfigMap") if c["metadata"]["name"] == CONFIG_MAP]
    assert len(rendered) == int(settings["enabled"])
    for config_map in rendered:
        assert config_map["metadata"]["namespace"] == (settings["namespace"] or NAMESPACE)
        assert adapter_rules(r)


def test_some_value_set_renders_the_rules_next_to_an_in_flight_hpa() -> None:
    assert any(
        render(name).values["metrics"]["prometheusAdapterRules"]["enabled"] and hpa_pods_metrics(render(name))
        for name in SETS
    )


@pytest.mark.parametrize(
    "value_set", [s for s in SETS if VALUE_SETS[s].get("metrics", {}).get("prometheusAdapterRules")]
)
def test_the_rule_serves_the_exported_gauge_under_the_name_the_hpa_asks_for(value_set: str) -> None:
    r = render(value_set)
    series, labels = exported_gauge()
    asked = hpa_pods_metrics(r)
    assert asked, f"{value_set}: no HPA scales on the in-flight metric"
    served = {served_metric(rule, series) for rule in adapter_rules(r)} - {None}
    assert served == asked, f"HPAs ask for {asked}; the adapter serves {series} as {served}"

    (rule,) = adapter_rules(r)
    settings = r.values["metrics"]["prometheusAdapterRules"]
    ns_label, pod_label = settings["namespaceLabel"], settings["podLabel"]
    # Discovery keeps only series that name their pod, and association maps exactly those
    # labels to the namespace and the pod the HPA asks about.
    matchers = SELECTOR.match(rule["seriesQuery"])
    assert matchers is not None
    assert set(matchers["matchers"].split(",")) == {f'{ns_label}!=""', f'{pod_label}!=""'}
    assert rule["resources"] == {
        "overrides": {ns_label: {"resource": "namespace"}, pod_label: {"resource": "pod"}}
    }
    assert pod_label not in labels and ns_label not in labels, "they come from the scrape, not the gauge"

    # What the adapter sends Prometheus for `pods/<metric>` of two pods: one value per pod,
    # the gauge's own labels (the gRPC service) aggregated away.
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", f'{ns_label}="{NAMESPACE}",{pod_label}=~"a|b"')
        .replace("<<.GroupBy>>", pod_label)
    )
    assert "<<" not in query, query
    assert query == f'max by ({pod_label}) ({series}{{{ns_label}="{NAMESPACE}",{pod_label}=~"a|b"}})'


def test_the_rule_follows_other_scrape_label_names() -> None:
    values = {
        "metrics": {
            "prometheusAdapterRules": {
                "enabled": True,
                "namespaceLabel": "kubernetes_namespace",
                "podLabel": "kubernetes_pod_name",
            }
        }
    }
    config = yaml.safe_load(render_values(values)["agentmesh/templates/prometheus-adapter-rules.yaml"])
    (rule,) = yaml.safe_load(config["data"]["config.yaml"])["rules"]
    assert rule["seriesQuery"] == 'agentmesh_rpc_in_flight{kubernetes_namespace!="",kubernetes_pod_name!=""}'
    assert set(rule["resources"]["overrides"]) == {"kubernetes_namespace", "kubernetes_pod_name"}


def test_an_in_flight_hpa_renders_without_the_adapter_rules() -> None:
    """The adapter may be configured some other way: the HPA never depends on the ConfigMap."""
    r = render("02-hpa-inflight-values")
    assert not r.values["metrics"]["prometheusAdapterRules"]["enabled"]
    assert hpa_pods_metrics(r) == {exported_gauge()[0]}
    assert not r.has("ConfigMap", CONFIG_MAP)


def test_the_readme_shows_the_rule_the_chart_renders() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    blocks = [
        yaml.safe_load(textwrap.dedent(block))
        for block in re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
        if "seriesQuery" in block
    ]
    assert len(blocks) == 1, "README.md shows the adapter rule once"
    rendered = yaml.safe_load(
        render_values({"metrics": {"prometheusAdapterRules": {"enabled": True}}})[
            "agentmesh/templates/prometheus-adapter-rules.yaml"
        ]
    )
    assert blocks[0] == yaml.safe_load(rendered["data"]["config.yaml"])

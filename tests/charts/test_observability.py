"""The chart's alerts (PrometheusRule) and Grafana dashboard: rendered behind their values, and
every expression names only series the services export (agentmesh/kit/metrics.py as /metrics
exposes it: counters as `_total`, histograms as `_bucket`/`_sum`/`_count`)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from prometheus_client import generate_latest

from agentmesh.kit import metrics
from tests.charts.chart import CHART_DIR, NAMESPACE, VALUE_SETS, render, render_values
from tests.charts.test_render import custom_resource_validator

SETS = sorted(VALUE_SETS)
METRIC = re.compile(r"\bagentmesh_[a-z0-9_]+\b")
DASHBOARD_FILE = CHART_DIR / "files" / "grafana" / "agentmesh.json"
DASHBOARD_CONFIG_MAP = "mesh-agentmesh-grafana-dashboard"
# What the issue asks the alerts to cover, each by the series it watches.
CONCERNS = {
    "AgentmeshQueueLagHigh": "agentmesh_task_queue_lag_seconds",
    "AgentmeshDeadLetters": "agentmesh_task_dead_letter_depth",
    "AgentmeshBreakerOpen": "agentmesh_tool_breaker_state",
    "AgentmeshBudgetExhausted": "agentmesh_budget_exhausted_total",
    "AgentmeshErrorRatioHigh": "agentmesh_rpc_handled_total",
    "AgentmeshRegistryUnreachable": "agentmesh_registry_reachable",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_series() -> set[str]:
    """Series names a service's /metrics can carry, from the exposition's own TYPE lines."""
    names: set[str] = set()
    for line in generate_latest(metrics.REGISTRY).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            if kind == "counter":  # prometheus_client names the family with its `_total` already
                family = family.removesuffix("_total")
            names |= {family + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def alert_rules(value_set: str) -> list[dict[str, Any]]:
    return [
        rule
        for doc in render(value_set).of_kind("PrometheusRule")
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
    ]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def check_names_exported(expr: str) -> None:
    named = set(METRIC.findall(expr))
    assert named, f"names no agentmesh metric: {expr}"
    unknown = named - exported_series()
    assert not unknown, f"{sorted(unknown)} are not exported by the services (in {expr})"
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_exported_series_are_read_from_the_exposition() -> None:
    series = exported_series()
    assert {
        "agentmesh_rpc_handled_total",
        "agentmesh_rpc_duration_seconds_bucket",
        "agentmesh_serving",
    } <= series
    assert "agentmesh_rpc_handled" not in series  # a counter's samples are `_total`


@pytest.mark.parametrize("value_set", SETS)
def test_alerts_and_dashboard_render_only_when_asked_for(value_set: str) -> None:
    r = render(value_set)
    settings = r.values["metrics"]
    assert len(r.of_kind("PrometheusRule")) == int(settings["prometheusRule"]["enabled"])
    dashboards = [c for c in r.of_kind("ConfigMap") if c["metadata"]["name"] == DASHBOARD_CONFIG_MAP]
    assert len(dashboards) == int(settings["grafanaDashboard"]["enabled"])
    for config_map in dashboards:
        assert config_map["metadata"]["namespace"] == (settings["grafanaDashboard"]["namespace"] or NAMESPACE)
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # the sidecar's default label
        assert json.loads(config_map["data"]["agentmesh.json"]) == json.loads(DASHBOARD_FILE.read_text())


def test_some_value_set_renders_the_alerts_and_the_dashboard() -> None:
    assert any(alert_rules(name) for name in SETS)
    assert any(render(name).values["metrics"]["grafanaDashboard"]["enabled"] for name in SETS)


@pytest.mark.parametrize("value_set", [s for s in SETS if alert_rules(s)])
def test_every_alert_watches_exported_series_of_the_release(value_set: str) -> None:
    rules = alert_rules(value_set)
    assert {rule["alert"]: None for rule in rules}.keys() == CONCERNS.keys()
    settings = render(value_set).values["metrics"]["prometheusRule"]
    for rule in rules:
        check_names_exported(rule["expr"])
        assert CONCERNS[rule["alert"]] in rule["expr"]
        # Each selector is limited to the release's namespace.
        for selector in re.findall(r"agentmesh_[a-z0-9_]+(\{[^}]*\})?", rule["expr"]):
            assert f'namespace="{NAMESPACE}"' in selector, rule["expr"]
        assert rule["labels"]["severity"] == settings["severity"]
        assert (
            rule["annotations"]["summary"]
            and "{{ $labels." in rule["annotations"]["description"] + rule["annotations"]["summary"]
        )


def test_thresholds_come_from_the_values() -> None:
    values = {
        "metrics": {
            "prometheusRule": {"enabled": True, "queueLagSeconds": 17, "errorRatio": 0.2, "for": "9m"}
        }
    }
    text = render_values(values)["agentmesh/templates/prometheusrule.yaml"]
    assert "agentmesh_task_queue_lag_seconds" in text and ") > 17" in text and "> 0.2" in text
    assert "for: 9m" in text


def test_the_dashboard_queries_exported_series_through_its_variables() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] and dashboard["title"] == "agentmesh"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for expr in dashboard_exprs(dashboard):
        check_names_exported(expr)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], target["expr"]
    watched = {name for expr in dashboard_exprs(dashboard) for name in METRIC.findall(expr)}
    assert set(CONCERNS.values()) <= watched  # what the alerts fire on can be looked at


RULE = {"alert": "A", "expr": "up == 0", "for": "5m", "labels": {"severity": "warning"}}


def _rule_document(**rule: Any) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "r"},
        "spec": {"groups": [{"name": "g", "rules": [rule]}]},
    }


@pytest.mark.parametrize(
    "rule",
    [
        {k: v for k, v in RULE.items() if k != "expr"},  # expr is required
        {**RULE, "record": "x:y"},  # alert or record, not both
        {"expr": "up"},  # one of them
        {"record": "x:y", "expr": "up", "for": "5m"},  # recording rules have no `for`
        {**RULE, "for": "5 minutes"},  # a Prometheus duration
        {**RULE, "severity": "warning"},  # no such field
    ],
)
def test_the_prometheus_rule_schema_rejects_what_the_docs_do_not_allow(rule: dict[str, Any]) -> None:
    validator = custom_resource_validator("monitoring.coreos.com/v1", "PrometheusRule")
    jsonschema.Draft202012Validator.check_schema(validator.schema)
    assert list(validator.iter_errors(_rule_document(**rule))), rule


def test_the_prometheus_rule_schema_accepts_documented_rules() -> None:
    validator = custom_resource_validator("monitoring.coreos.com/v1", "PrometheusRule")
    document = _rule_document(**RULE)
    document["spec"]["groups"].append(
        {"name": "rec", "interval": "30s", "rules": [{"record": "job:up:sum", "expr": "sum by (job) (up)"}]}
    )
    assert not [e.message for e in validator.iter_errors(document)]

"""Render, strict lint and schema-validate every manifest of every value set.

Built-in kinds go through kubernetes-validate (strict: unknown fields are
errors) for each supported Kubernetes version; custom resources (KEDA,
Prometheus Operator) through the schemas in tests/charts/schemas/.
"""

from __future__ import annotations

from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest

from tests.charts.chart import (
    CHART_DIR,
    CUSTOM_RESOURCE_SCHEMAS,
    KUBERNETES_VERSIONS,
    VALUE_SETS,
    custom_resource_validator,
    render,
)

SETS = sorted(VALUE_SETS)
BUILTIN_API_VERSIONS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "autoscaling/v2",
    "policy/v1",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
}


def test_there_are_enough_documented_value_sets() -> None:
    assert len(SETS) >= 9, "the defaults and at least 8 documented value sets in charts/agentmesh/ci/"
    for path in (CHART_DIR / "ci").glob("*.yaml"):
        assert path.read_text().startswith("# "), f"{path.name} must say what it covers in a comment"


@pytest.mark.parametrize("value_set", SETS)
def test_strict_lint_is_clean(value_set: str) -> None:
    for kube_version in KUBERNETES_VERSIONS:
        report = helm_python.lint(
            CHART_DIR, VALUE_SETS[value_set], strict=True, kube_version=f"v{kube_version}.0"
        )
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


@pytest.mark.parametrize("value_set", SETS)
@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
def test_builtin_manifests_validate_strictly(value_set: str, kube_version: str) -> None:
    failures = []
    for doc in render(value_set).documents:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCE_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("value_set", SETS)
def test_custom_resources_match_their_documented_schemas(value_set: str) -> None:
    failures = []
    for doc in render(value_set).documents:
        key = (doc["apiVersion"], doc["kind"])
        if key not in CUSTOM_RESOURCE_SCHEMAS:
            assert doc["apiVersion"] in BUILTIN_API_VERSIONS, f"{key}: a custom resource without a schema"
            continue
        for error in custom_resource_validator(*key).iter_errors(doc):
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.json_path}: {error.message}")
    assert not failures, "\n".join(failures)


def test_the_value_sets_cover_every_kind_the_chart_can_render() -> None:
    kinds = {doc["kind"] for name in SETS for doc in render(name).documents}
    assert kinds >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Job",
        "StatefulSet",
        "Pod",
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
        "PrometheusRule",
    }, kinds


def scaled_object(trigger_type: str, **metadata: str) -> dict[str, Any]:
    """A ScaledObject with one lag-based Redis streams trigger and the given connection metadata."""
    lag = {"stream": "s", "consumerGroup": "g", "lagCount": "5", "activationLagCount": "0"}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "triggers": [{"type": trigger_type, "metadata": {**lag, **metadata}}],
        },
    }


BAD_CUSTOM_RESOURCES: list[tuple[str, dict[str, Any]]] = [
    # redis-cluster-streams reads `addresses`, never the single-node `address`.
    ("ScaledObject", scaled_object("redis-cluster-streams", address="r-0:6379")),
    # A Redis Cluster has only database 0: the cluster scaler takes no index.
    ("ScaledObject", scaled_object("redis-cluster-streams", addresses="r-0:6379", databaseIndex="1")),
    # The cluster docs page's activationTargetLag is not read by KEDA's parser.
    ("ScaledObject", scaled_object("redis-cluster-streams", addresses="r-0:6379", activationTargetLag="1")),
    ("ScaledObject", scaled_object("redis-cluster-streams", addresses="r-0:6379;r-1:6379")),
    ("ScaledObject", scaled_object("redis-sentinel-streams", addresses="s-0:26379")),  # no sentinelMaster
    ("ScaledObject", scaled_object("redis-streams", addresses="r-0:6379,r-1:6379")),
    (
        "ScaledObject",
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "x"},
            "spec": {
                "scaleTargetRef": {"name": "x"},
                "triggers": [{"type": "redis-streams", "metadata": {"address": "r:6379", "lagCount": "5"}}],
            },
        },
    ),
    (
        "ScaledObject",
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"name": "x"}, "minReplicas": 1, "triggers": []},
        },
    ),
    (
        "ServiceMonitor",
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "x"},
            "spec": {"selector": {}, "endpoints": [{"port": "http", "interval": "thirty seconds"}]},
        },
    ),
    (
        "TriggerAuthentication",
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": "x"},
            "spec": {"secretTargetRef": [{"parameter": "password", "name": "s"}]},
        },
    ),
]


GOOD_CUSTOM_RESOURCES = [
    scaled_object("redis-streams", address="r:6379", databaseIndex="0"),
    scaled_object("redis-cluster-streams", addresses="r-0:6379, r-1:6379"),
    scaled_object("redis-cluster-streams", hostsFromEnv="REDIS_HOSTS", portsFromEnv="REDIS_PORTS"),
    scaled_object("redis-sentinel-streams", addresses="s-0:26379,s-1:26379", sentinelMaster="m"),
]


@pytest.mark.parametrize("doc", GOOD_CUSTOM_RESOURCES)
def test_the_custom_resource_schemas_accept_documented_redis_triggers(doc: dict[str, Any]) -> None:
    errors = list(custom_resource_validator(doc["apiVersion"], doc["kind"]).iter_errors(doc))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize(("kind", "doc"), BAD_CUSTOM_RESOURCES)
def test_the_custom_resource_schemas_reject_what_the_docs_do_not_allow(
    kind: str, doc: dict[str, Any]
) -> None:
    validator = custom_resource_validator(doc["apiVersion"], kind)
    jsonschema.Draft202012Validator.check_schema(validator.schema)
    assert list(validator.iter_errors(doc)), f"{kind} schema accepted {doc}"

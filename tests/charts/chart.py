"""Rendering the chart with the real Helm SDK, and reading what it renders.

`render(value_set)` runs Helm's own template engine (helm-python-sdk binds
libhelm; no binary, no cluster) and returns the manifests as dicts; results
are cached per value set because every test module looks at the same renders.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "agentmesh"
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
RELEASE = "mesh"
NAMESPACE = "prod"
KUBERNETES_VERSIONS = ("1.29", "1.34")

# Custom resources kubernetes-validate has no schema for (DESIGN.md, "Kubernetes
# API tests"): each is checked against a schema written from its documented fields.
CUSTOM_RESOURCE_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}


def value_sets() -> dict[str, dict[str, Any]]:
    """The chart defaults plus every documented value set in charts/agentmesh/ci/."""
    sets: dict[str, dict[str, Any]] = {"defaults": {}}
    for path in sorted((CHART_DIR / "ci").glob("*.yaml")):
        sets[path.stem] = yaml.safe_load(path.read_text()) or {}
    return sets


VALUE_SETS = value_sets()


@functools.cache
def chart() -> helm_python.Chart:
    helm_python.disable_logging()
    return helm_python.Chart.load(CHART_DIR)


def render_values(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text; raises the SDK's HelmError on bad values."""
    return chart().render(values, name=RELEASE, namespace=NAMESPACE)


@dataclass(frozen=True)
class Render:
    """One value set rendered: its manifests and the values Helm merged."""

    name: str
    values: dict[str, Any]
    documents: tuple[dict[str, Any], ...]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for doc in self.of_kind(kind):
            if doc["metadata"]["name"] == name:
                return doc
        raise KeyError(f"{kind}/{name} not rendered in {self.name}")

    def has(self, kind: str, name: str) -> bool:
        return any(doc["metadata"]["name"] == name for doc in self.of_kind(kind))

    def pod_templates(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, pod template) for Deployments and StatefulSets."""
        for doc in self.documents:
            if doc["kind"] in ("Deployment", "StatefulSet"):
                yield doc, doc["spec"]["template"]

    def workloads_selected_by(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        return [
            doc
            for doc, template in self.pod_templates()
            if selector.items() <= template["metadata"].get("labels", {}).items()
        ]


@functools.cache
def render(name: str) -> Render:
    return render_with(name, VALUE_SETS[name])


def render_with(name: str, values: dict[str, Any]) -> Render:
    """Render any values (e.g. a value set with overrides merged in); `name` labels the result."""
    rendered = render_values(values)
    documents: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                documents.append(doc)
    return Render(name, chart().merge_values(values), tuple(documents), notes)


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, mappings key by key (as Helm merges --set values)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> the EnvVar entry (value or valueFrom)."""
    return {item["name"]: item for item in container.get("env", [])}


@functools.cache
def _custom_registry() -> Registry:
    common = json.loads((SCHEMAS_DIR / "_common.json").read_text())
    return Registry().with_resource(common["$id"], Resource.from_contents(common))


def custom_resource_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / CUSTOM_RESOURCE_SCHEMAS[(api_version, kind)]).read_text())
    return jsonschema.Draft202012Validator(schema, registry=_custom_registry())

"""What a labelled Service says about its tools (pure).

A platform team opts a Service in with one label and, usually, one annotation:

    metadata:
      labels:      {agentmesh.io/tool: "true"}
      annotations: {agentmesh.io/port: "grpc"}      # port name or number; default: a port named
                                                     # grpc, else the Service's only port
Optional annotations:
    agentmesh.io/methods   comma-separated prefixes of `pkg.Svc/Method` names to register
                           (e.g. `payments.v1.`); default: every method with the agentmesh.v1.tool option
    agentmesh.io/endpoint  host:port to bind instead of `<svc>.<ns>.svc.<cluster domain>:<port>`
    agentmesh.io/retire    what deletion does: `unbind` (default: clear the endpoint binding) or
                           `deprecate` (also deprecate the tools' versions)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

LABEL = "agentmesh.io/tool"
PORT = "agentmesh.io/port"
METHODS = "agentmesh.io/methods"
ENDPOINT = "agentmesh.io/endpoint"
RETIRE = "agentmesh.io/retire"
ANNOTATIONS = (PORT, METHODS, ENDPOINT, RETIRE)
RETIRE_MODES = ("unbind", "deprecate")
_ENDPOINT = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,253}:\d{1,5}$")
_METHOD_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(/[A-Za-z0-9_]*)?$")


class AnnotationError(ValueError):
    """The Service is labelled but its annotations cannot be used; the message names each problem."""


@dataclass(frozen=True, slots=True)
class LabelledService:
    """One labelled Service, resolved to where its tools are reached."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    endpoint: str
    method_prefixes: tuple[str, ...]
    retire: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def wants(self, method: str) -> bool:
        return not self.method_prefixes or any(method.startswith(p) for p in self.method_prefixes)


def is_labelled(obj: dict[str, Any]) -> bool:
    """Our own label check: the watch's label selector is a request, not a guarantee."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return str(labels.get(LABEL, "")).lower() == "true"


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def parse_service(obj: dict[str, Any], *, cluster_domain: str = "cluster.local") -> LabelledService:
    """The LabelledService a labelled Service object describes, or AnnotationError naming every problem."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    problems: list[str] = []
    ports = [p for p in ((obj.get("spec") or {}).get("ports") or []) if isinstance(p, dict)]
    port = _port(ports, str(annotations.get(PORT, "")).strip(), problems)
    endpoint = str(annotations.get(ENDPOINT, "")).strip()
    if endpoint and not _ENDPOINT.fullmatch(endpoint):
        problems.append(f"{ENDPOINT} {endpoint[:80]!r} is not host:port")
    if not endpoint and port is not None:
        endpoint = f"{name}.{namespace}.svc.{cluster_domain}:{port}"
    prefixes = tuple(p.strip() for p in str(annotations.get(METHODS, "")).split(",") if p.strip())
    for prefix in prefixes:
        if not _METHOD_PREFIX.fullmatch(prefix):
            problems.append(f"{METHODS} entry {prefix[:80]!r} is not a pkg.Svc/Method prefix")
    retire = str(annotations.get(RETIRE, "unbind")).strip() or "unbind"
    if retire not in RETIRE_MODES:
        problems.append(f"{RETIRE} must be one of {', '.join(RETIRE_MODES)} (got {retire[:40]!r})")
    if problems:
        raise AnnotationError("; ".join(problems))
    return LabelledService(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        endpoint=endpoint,
        method_prefixes=prefixes,
        retire=retire,
    )


def _port(ports: list[dict[str, Any]], wanted: str, problems: list[str]) -> int | None:
    if wanted:
        if wanted.isdigit():
            number = int(wanted)
            if not 0 < number < 65536:
                problems.append(f"{PORT} {wanted!r} is not a port number")
                return None
            if ports and not any(p.get("port") == number for p in ports):
                problems.append(f"{PORT} {number} is not one of the Service's ports")
                return None
            return number
        for port in ports:
            if port.get("name") == wanted:
                return int(port["port"])
        problems.append(f"{PORT} {wanted[:63]!r} names no port of the Service")
        return None
    named = [p for p in ports if p.get("name") == "grpc"]
    if named:
        return int(named[0]["port"])
    if len(ports) == 1 and isinstance(ports[0].get("port"), int):
        return int(ports[0]["port"])
    problems.append(f"set {PORT}: the Service has {len(ports)} ports and none is named grpc")
    return None

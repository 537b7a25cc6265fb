"""Values the chart must refuse at `helm install/template` time, with a message
that names the value and what to do, never as a broken Deployment."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from tests.charts.chart import render_values

MODEL = {"model": {"baseUrl": "https://llm.example.com/v1", "name": "m"}}
# The smallest domain spec the agent accepts (agents/spec.py); the chart adds the slug.
SPEC = {"display_name": "Refunds", "description": "Refunds orders.", "system_prompt": "Refund it."}
SPEC_TEXT = "display_name: Refunds\ndescription: Refunds orders.\nsystem_prompt: Refund it.\n"


def agent(**overrides: Any) -> dict[str, Any]:
    return {**MODEL, "agents": {"refunds": {"spec": SPEC, **overrides}}}


def spec(given: dict[str, Any] | str) -> dict[str, Any]:
    """Values with one domain, refunds, whose spec is `given`."""
    return {**MODEL, "agents": {"refunds": {"spec": given}}}


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in SPEC.items() if k != field}


EXTERNAL_REDIS = {"redis": {"bundled": {"enabled": False}, "external": {"existingSecret": "redis-url"}}}


def keda_cluster(**redis: Any) -> dict[str, Any]:
    """An external Redis Cluster KEDA reaches through one node, plus `redis` settings."""
    return {**EXTERNAL_REDIS, "keda": {"redis": {"mode": "cluster", "addresses": ["r-0:6379"], **redis}}}


# (id, values, fragments the message must contain)
REJECTED: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown top-level key", {"replicas": 3}, ["additional properties 'replicas' not allowed"]),
    (
        "unknown key inside an agent",
        agent(autoscaling={"maxReplica": 3}),
        ["/agents/refunds/autoscaling", "'maxReplica' not allowed"],
    ),
    (
        "domain spec in agentDefaults",
        {"agentDefaults": {"spec": {}}},
        ["/agentDefaults", "'spec' not allowed"],
    ),
    ("wrong type", {"registry": {"replicaCount": "two"}}, ["/registry/replicaCount", "want integer"]),
    ("negative number", {"agentDefaults": {"maxInFlight": -1}}, ["/agentDefaults/maxInFlight", "minimum"]),
    ("negative drain", agent(drain={"graceSeconds": -5}), ["/agents/refunds/drain/graceSeconds", "minimum"]),
    ("port beyond the +2000 range", {"registry": {"grpcPort": 64000}}, ["/registry/grpcPort", "maximum"]),
    (
        "domain slug not DNS-safe",
        {**MODEL, "agents": {"Refunds": {"spec": SPEC}}},
        ["'Refunds'", "pattern"],
    ),
    ("zero shards", {"queue": {"shards": 0}}, ["/queue/shards", "minimum"]),
    ("unknown fsync policy", {"redis": {"bundled": {"appendfsync": "no"}}}, ["/redis/bundled/appendfsync"]),
    ("PDB that blocks eviction", agent(pdb={"maxUnavailable": 0}), ["/agents/refunds/pdb/maxUnavailable"]),
    (
        "HPA min > max",
        agent(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        ["agents.refunds.autoscaling", "minReplicas (5) is greater than maxReplicas (2)"],
    ),
    (
        "HPA and KEDA both on",
        agent(keda={"enabled": True}),
        ["agents.refunds", "autoscaling.enabled and keda.enabled are both true", "autoscaling.enabled=false"],
    ),
    (
        "KEDA min > max",
        agent(
            autoscaling={"enabled": False}, keda={"enabled": True, "minReplicaCount": 9, "maxReplicaCount": 3}
        ),
        ["agents.refunds.keda", "minReplicaCount (9) is greater than maxReplicaCount (3)"],
    ),
    (
        "no Redis configured",
        {"redis": {"bundled": {"enabled": False}}},
        ["no Redis configured", "redis.external.existingSecret", "redis.bundled.enabled=true"],
    ),
    (
        "both Redis configured",
        {"redis": {"external": {"existingSecret": "redis-url"}}},
        ["redis.bundled.enabled=false"],
    ),
    (
        "KEDA on an external Redis without its address",
        {**agent(autoscaling={"enabled": False}, keda={"enabled": True}), **EXTERNAL_REDIS},
        ["agents.refunds.keda", "keda.redis.address", "keda.redis.mode=cluster|sentinel"],
    ),
    (
        "KEDA Redis mode that does not exist",
        {"keda": {"redis": {"mode": "clustered"}}},
        ["/keda/redis/mode", "'standalone', 'cluster', 'sentinel'"],
    ),
    (
        "KEDA cluster mode without the cluster's nodes",
        keda_cluster(addresses=[]),
        ["/keda/redis/addresses", "minItems: got 0, want 1"],
    ),
    (
        "KEDA cluster mode on the single-node bundled Redis",
        {"keda": {"redis": {"mode": "cluster", "addresses": ["redis-0.data:6379"]}}},
        ["/redis/bundled/enabled", "must be false", "/keda/redis/mode", "must be 'standalone'"],
    ),
    (
        "KEDA sentinel mode on the bundled Redis",
        {"keda": {"redis": {"mode": "sentinel", "addresses": ["s-0.data:26379"], "sentinelMaster": "m"}}},
        ["/redis/bundled/enabled", "/keda/redis/mode"],
    ),
    (
        "KEDA sentinel mode without the primary's name",
        {**EXTERNAL_REDIS, "keda": {"redis": {"mode": "sentinel", "addresses": ["s-0.data:26379"]}}},
        ["/keda/redis/sentinelMaster", "minLength"],
    ),
    (
        "a cluster node that is not host:port",
        keda_cluster(addresses=["redis-0.data"]),
        ["/keda/redis/addresses/0", "does not match pattern"],
    ),
    (
        "the same cluster node twice",
        keda_cluster(addresses=["r-0:6379", "r-0:6379"]),
        ["/keda/redis/addresses", "equal"],
    ),
    (
        "a standalone address in cluster mode (ignored there)",
        keda_cluster(address="r:6379"),
        ["/keda/redis/address", "must be ''"],
    ),
    (
        "cluster nodes in standalone mode (ignored there)",
        {"keda": {"redis": {"addresses": ["r-0:6379"]}}},
        ["/keda/redis/addresses", "maxItems: got 1, want 0"],
    ),
    (
        "a database index on a Redis Cluster",
        keda_cluster(databaseIndex=2),
        ["/keda/redis/databaseIndex", "must be 0"],
    ),
    (
        "a Sentinel primary name outside sentinel mode",
        {"keda": {"redis": {"sentinelMaster": "mymaster"}}},
        ["/keda/redis/sentinelMaster", "must be ''"],
    ),
    (
        "a Sentinel password outside sentinel mode",
        {"keda": {"redis": {"sentinelPasswordSecret": {"name": "sentinel-auth"}}}},
        ["/keda/redis/sentinelPasswordSecret/name", "must be ''"],
    ),
    ("mTLS without certificates", {"tls": {"enabled": True}}, ["tls.existingSecret", "tls.crt"]),
    (
        "termination grace shorter than the drain",
        agent(terminationGracePeriodSeconds=20),
        ["agents.refunds.terminationGracePeriodSeconds (20)", "drain.delaySeconds + drain.graceSeconds (35)"],
    ),
    (
        "PDB minAvailable at the replica floor",
        agent(pdb={"minAvailable": 2}),
        ["agents.refunds.pdb.minAvailable (2)", "minimum 2 replica(s)", "maxUnavailable"],
    ),
    (
        "PDB percentage that rounds up to every replica",
        agent(autoscaling={"enabled": False}, replicaCount=1, pdb={"minAvailable": "50%"}),
        ["agents.refunds.pdb.minAvailable (50%)", "keeps 1 of the minimum 1 replica(s)"],
    ),
    (
        "PDB on a domain KEDA scales to zero",
        agent(
            autoscaling={"enabled": False},
            keda={"enabled": True, "minReplicaCount": 0},
            pdb={"minAvailable": 1},
        ),
        ["agents.refunds.pdb.minAvailable (1)"],
    ),
    ("PDB maxUnavailable 0%", agent(pdb={"maxUnavailable": "0%"}), ["agents.refunds.pdb.maxUnavailable"]),
    ("HPA without a metric", agent(autoscaling={"targetCPUUtilizationPercentage": None}), ["no metric"]),
    ("empty domain spec text", spec(""), ["agents.refunds.spec is empty"]),
    ("domain spec text of comments only", spec("# nothing yet\n"), ["agents.refunds.spec is empty"]),
    (
        "empty domain spec mapping",
        spec({}),
        ["/agents/refunds/spec", "missing properties", "'display_name'", "'description'", "'system_prompt'"],
    ),
    (
        "domain spec without display_name",
        spec(without("display_name")),
        ["/agents/refunds/spec", "missing property 'display_name'"],
    ),
    (
        "domain spec with an empty system_prompt",
        spec({**SPEC, "system_prompt": ""}),
        ["/agents/refunds/spec/system_prompt", "minLength"],
    ),
    (
        "domain spec slug not DNS-safe",
        spec({**SPEC, "slug": "Refunds"}),
        ["/agents/refunds/spec/slug", "does not match pattern"],
    ),
    (
        "domain spec field the agent does not know",
        spec({**SPEC, "allowed_tools": ["payments_refund"]}),
        ["/agents/refunds/spec", "'allowed_tools' not allowed"],
    ),
    (
        "domain spec slug that is not the key",
        spec({**SPEC, "slug": "returns"}),
        ["agents.refunds.spec", 'slug "returns" differs from its key "refunds"', "must agree"],
    ),
    (
        "domain spec text whose slug is not the key",
        spec("slug: returns\n" + SPEC_TEXT),
        ["agents.refunds.spec", 'slug "returns" differs from its key "refunds"', "must agree"],
    ),
    (
        "domain spec text that is not YAML",
        spec("description: [unclosed"),
        ["agents.refunds.spec is not a YAML mapping"],
    ),
    (
        "domain spec text that is a list",
        spec("- display_name: Refunds\n"),
        ["agents.refunds.spec is not a YAML mapping"],
    ),
    (
        "domain spec text without system_prompt",
        spec("display_name: Refunds\ndescription: Refunds orders.\n"),
        ["agents.refunds.spec has no system_prompt", "crash-loop"],
    ),
    (
        "domain spec text no slug line can go in front of",
        spec("{display_name: Refunds, description: Refunds orders., system_prompt: Refund it.}"),
        ["agents.refunds.spec", "cannot put `slug: refunds` in front"],
    ),
    (
        "a KEDA consumer group (the agent's is always its slug)",
        agent(autoscaling={"enabled": False}, keda={"enabled": True, "consumerGroup": "refunds-workers"}),
        ["/agents/refunds/keda", "'consumerGroup' not allowed"],
    ),
    (
        "a default KEDA consumer group",
        {"agentDefaults": {"keda": {"consumerGroup": "workers"}}},
        ["/agentDefaults/keda", "'consumerGroup' not allowed"],
    ),
    (
        "agents without a model",
        {"agents": {"refunds": {"spec": SPEC}}},
        ["model.baseUrl", "model.scripted"],
    ),
    (
        "scripted model without a script",
        {"model": {"scripted": {"enabled": True}}},
        ["model.scripted.script"],
    ),
    ("tracing without an endpoint", {"tracing": {"enabled": True}}, ["tracing.endpoint"]),
    ("image digest that is a tag", {"image": {"digest": "latest"}}, ["/image/digest"]),
    (
        "names too long for a Service",
        {**MODEL, "fullnameOverride": "a-rather-long-release-name", "agents": {"a" * 31: {"spec": SPEC}}},
        ["longer than 63 characters", "fullnameOverride"],
    ),
]


@pytest.mark.parametrize(("values", "fragments"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_bad_values_fail_with_a_readable_message(values: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(helm_python.HelmError) as caught:
        render_values(values)
    assert isinstance(caught.value, helm_python.HelmValuesError | helm_python.HelmRenderError)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_disabling_autoscaling_per_domain_overrides_the_default() -> None:
    """false/0 in a domain must win over agentDefaults (sprig's merge would drop them)."""
    rendered = render_values(agent(autoscaling={"enabled": False}, replicaCount=0, pdb={"enabled": False}))
    assert "refunds" not in rendered["agentmesh/templates/hpa.yaml"]
    assert "replicas: 0" in rendered["agentmesh/templates/deployment.yaml"]
    assert "refunds" not in rendered["agentmesh/templates/pdb.yaml"]


def test_a_pdb_percentage_below_the_replica_floor_is_accepted() -> None:
    rendered = render_values(agent(autoscaling={"minReplicas": 4}, pdb={"minAvailable": "50%"}))
    assert 'minAvailable: "50%"' in rendered["agentmesh/templates/pdb.yaml"]

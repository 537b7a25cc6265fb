"""What the rendered manifests must mean, beyond being schema-valid.

Probes hit declared ports, autoscalers own their Deployment alone, selectors
pick exactly the pods they should, PDBs never block eviction, no secret sits
in a ConfigMap, and every service's environment is read back by the real
configuration loader (agentmesh.kit.config.Settings) with the ports the pod declares.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from agentmesh.cli.serve import entrypoint_for, load
from agentmesh.console.server import console_port
from agentmesh.kit.config import ConfigError, Role, Settings
from memory import keys
from tests.charts.chart import NAMESPACE, VALUE_SETS, Render, container_env, merged, render, render_with

SETS = sorted(VALUE_SETS)
HEALTH_SERVICES = {"agent": "agentmesh.v1.AgentService", "registry": "agentmesh.v1.ToolRegistryService"}
GRPC_KINDS = ("registry", "agent", "tool")
CONTRACT_ALIASES = {field.alias for field in Settings.model_fields.values()}
HELPER_ENV = {"K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_NODE_NAME", "REDIS_PASSWORD"}
SECRET_ENV = {"AGENTMESH_SERVICE_TOKEN", "MODEL_API_KEY", "REDIS_PASSWORD"}


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def main_container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{doc['metadata']['name']}: one container per pod"
    return dict(containers[0])


def ports_by_name(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def mesh_deployments(r: Render, *kinds: str) -> list[dict[str, Any]]:
    return [d for d in r.of_kind("Deployment") if not kinds or component(d) in kinds]


def scalers(r: Render) -> dict[str, list[dict[str, Any]]]:
    """Deployment name -> the HPAs and ScaledObjects targeting it."""
    owners: dict[str, list[dict[str, Any]]] = {}
    for doc in [*r.of_kind("HorizontalPodAutoscaler"), *r.of_kind("ScaledObject")]:
        owners.setdefault(doc["spec"]["scaleTargetRef"]["name"], []).append(doc)
    return owners


def min_replicas(r: Render, deployment: dict[str, Any]) -> int:
    owners = scalers(r).get(deployment["metadata"]["name"], [])
    if owners:
        spec = owners[0]["spec"]
        return int(spec.get("minReplicas", spec.get("minReplicaCount", 1)))
    return int(deployment["spec"]["replicas"])


def service_for(r: Render, deployment: dict[str, Any]) -> dict[str, Any]:
    """The ClusterIP (non-headless) Service selecting this Deployment's pods."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    found = [
        s
        for s in r.of_kind("Service")
        if s["spec"].get("clusterIP") != "None" and s["spec"]["selector"].items() <= labels.items()
    ]
    assert len(found) == 1, f"{deployment['metadata']['name']}: {len(found)} ClusterIP Services"
    return found[0]


def dns(service: dict[str, Any]) -> str:
    return f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"


def service_port(service: dict[str, Any], name: str) -> int:
    return int(next(p["port"] for p in service["spec"]["ports"] if p["name"] == name))


def environ(container: dict[str, Any]) -> dict[str, str]:
    """The environment the process would see: literals with $(VAR) expanded, references as placeholders."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
            )
        elif "secretKeyRef" in item["valueFrom"]:
            env[item["name"]] = f"secret-{item['valueFrom']['secretKeyRef']['key']}"
        else:
            env[item["name"]] = "from-downward-api"
    return env


def mounted_file(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """(volume, file name inside it) for a path under one of the container's mounts."""
    for mount in container["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            return volume, path[len(prefix) :]
    raise AssertionError(f"{path} is not under any volume mount")


def volume_provides(volume: dict[str, Any], filename: str) -> bool:
    if "configMap" in volume or "secret" in volume:
        source = volume.get("configMap") or volume["secret"]
        return any(item["path"] == filename for item in source.get("items", [])) or "items" not in source
    return any(
        item["path"] == filename
        for src in volume["projected"]["sources"]
        for item in (src.get("secret") or src.get("configMap") or {}).get("items", [])
    )


# --- probes -------------------------------------------------------------------


@pytest.mark.parametrize("value_set", SETS)
def test_probes_target_declared_ports_and_the_right_health_service(value_set: str) -> None:
    r = render(value_set)
    for doc, template in r.pod_templates():
        for container in template["spec"]["containers"]:
            named = ports_by_name(container)
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container[probe_name]
                where = f"{doc['metadata']['name']}.{probe_name}"
                if "grpc" in probe:
                    assert isinstance(probe["grpc"]["port"], int), f"{where}: gRPC probes need a numeric port"
                    assert probe["grpc"]["port"] in named.values(), f"{where}: port not declared"
                    tls = "AGENTMESH_TLS_CERT" in container_env(container)
                    expected = named["health"] if tls else named["grpc"]
                    assert probe["grpc"]["port"] == expected, f"{where}: probes use the plaintext health port"
                    kind = component(doc)
                    if kind in HEALTH_SERVICES:
                        assert probe["grpc"]["service"] == HEALTH_SERVICES[kind], where
                elif "tcpSocket" in probe:
                    assert probe["tcpSocket"]["port"] in named, f"{where}: port not declared"
                elif "httpGet" in probe:
                    assert probe["httpGet"]["port"] in named, f"{where}: port not declared"
                    assert probe["httpGet"]["path"] == "/healthz", where
                else:
                    assert "exec" in probe, where


# --- autoscaling -----------------------------------------------------------------


@pytest.mark.parametrize("value_set", SETS)
def test_each_autoscaler_owns_its_own_deployment_alone(value_set: str) -> None:
    r = render(value_set)
    for target, owners in scalers(r).items():
        assert len(owners) == 1, f"{target} is scaled by {[o['kind'] for o in owners]}: never both"
        owner = owners[0]
        deployment = r.get("Deployment", target)
        ref = owner["spec"]["scaleTargetRef"]
        assert (ref.get("kind", "Deployment"), ref.get("apiVersion", "apps/v1")) == ("Deployment", "apps/v1")
        assert owner["metadata"]["name"] == target
        for label in ("app.kubernetes.io/component", "agentmesh.io/domain", "agentmesh.io/tool"):
            assert owner["metadata"]["labels"].get(label) == deployment["metadata"]["labels"].get(label)
        spec = owner["spec"]
        low, high = (
            spec.get("minReplicas", spec.get("minReplicaCount")),
            spec.get("maxReplicas", spec.get("maxReplicaCount")),
        )
        assert low <= high, f"{owner['kind']}/{target}: min {low} > max {high}"
        if owner["kind"] == "HorizontalPodAutoscaler":
            assert spec["metrics"], f"HPA/{target} has no metric"
            assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0


@pytest.mark.parametrize("value_set", SETS)
def test_no_replicas_in_a_deployment_an_autoscaler_owns(value_set: str) -> None:
    r = render(value_set)
    owned = scalers(r)
    for deployment in r.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        if name in owned:
            assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns replicas"
        else:
            assert deployment["spec"]["replicas"] >= 1, name


def test_the_in_flight_metric_is_the_one_the_services_export() -> None:
    from agentmesh.kit import metrics

    hpa = render("02-hpa-inflight-values").get("HorizontalPodAutoscaler", "mesh-agentmesh-agent-refunds")
    pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metrics == [metrics.RPC_IN_FLIGHT._name]  # the gauge's exported name


# keda.redis.mode -> the KEDA scaler that reaches that kind of Redis
KEDA_TRIGGERS = {
    "standalone": "redis-streams",
    "cluster": "redis-cluster-streams",
    "sentinel": "redis-sentinel-streams",
}


def keda_secrets(values: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """TriggerAuthentication parameter -> (Secret, key) the values ask KEDA to use."""
    redis = values["keda"]["redis"]
    bundled = values["redis"]["bundled"]
    secrets = {}
    if redis["passwordSecret"]["name"]:
        secrets["password"] = (redis["passwordSecret"]["name"], redis["passwordSecret"]["key"])
    elif bundled["enabled"] and bundled["auth"]["existingSecret"]:
        secrets["password"] = (bundled["auth"]["existingSecret"], bundled["auth"]["key"])
    sentinel = redis["sentinelPasswordSecret"]
    if redis["mode"] == "sentinel" and sentinel["name"]:
        secrets["sentinelPassword"] = (sentinel["name"], sentinel["key"])
    return secrets


@pytest.mark.parametrize("value_set", SETS)
def test_keda_watches_every_shard_of_the_domains_queue(value_set: str) -> None:
    r = render(value_set)
    shards = r.values["queue"]["shards"]
    redis = r.values["keda"]["redis"]
    for scaled in r.of_kind("ScaledObject"):
        deployment = r.get("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        domain = deployment["metadata"]["labels"]["agentmesh.io/domain"]
        triggers = scaled["spec"]["triggers"]
        streams = [t["metadata"]["stream"] for t in triggers]
        assert streams == [keys.queue(domain, shard) for shard in range(shards)], "one trigger per shard"
        assert len({t["name"] for t in triggers}) == len(triggers)
        for trigger in triggers:
            meta = trigger["metadata"]
            assert trigger["type"] == KEDA_TRIGGERS[redis["mode"]]
            assert meta["consumerGroup"] == domain, "the agent's queue names its group after the domain"
            assert int(meta["lagCount"]) >= 1
            assert meta["enableTLS"] == str(redis["enableTLS"]).lower()
            if redis["mode"] == "standalone":
                assert "addresses" not in meta
                if r.values["redis"]["bundled"]["enabled"]:
                    service = r.get("Service", "mesh-agentmesh-redis")
                    assert meta["address"] == f"{dns(service)}:{service_port(service, 'redis')}"
                else:
                    assert meta["address"] == redis["address"]
            else:
                assert "address" not in meta
                assert meta["addresses"].split(",") == redis["addresses"]
            if redis["mode"] == "sentinel":
                assert meta["sentinelMaster"] == redis["sentinelMaster"]
            else:
                assert "sentinelMaster" not in meta
            # A Redis Cluster has only database 0, and KEDA's cluster client takes no index.
            if redis["mode"] == "cluster":
                assert "databaseIndex" not in meta
            else:
                assert meta["databaseIndex"] == str(redis["databaseIndex"])


@pytest.mark.parametrize("value_set", SETS)
def test_keda_authenticates_with_the_configured_password_secrets(value_set: str) -> None:
    r = render(value_set)
    expected = keda_secrets(r.values)
    referenced = set()
    for scaled in r.of_kind("ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            ref = trigger.get("authenticationRef")
            if not expected:
                assert ref is None, f"{scaled['metadata']['name']}: no password, no TriggerAuthentication"
                continue
            assert ref is not None, f"{scaled['metadata']['name']}: a password Secret is set but not used"
            assert ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
            auth = r.get("TriggerAuthentication", ref["name"])
            assert auth["metadata"]["namespace"] == scaled["metadata"]["namespace"]
            given = {s["parameter"]: (s["name"], s["key"]) for s in auth["spec"]["secretTargetRef"]}
            assert given == expected
            referenced.add(ref["name"])
    rendered = {a["metadata"]["name"] for a in r.of_kind("TriggerAuthentication")}
    assert rendered == referenced, "every TriggerAuthentication is used by a ScaledObject"


# --- selectors ------------------------------------------------------------------


@pytest.mark.parametrize("value_set", SETS)
def test_selectors_pick_exactly_their_own_pods(value_set: str) -> None:
    r = render(value_set)
    for doc, template in r.pod_templates():
        selector = doc["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items(), doc["metadata"]["name"]
        assert r.workloads_selected_by(selector) == [doc], f"{doc['metadata']['name']}: selector overlaps"
    for service in r.of_kind("Service"):
        selected = r.workloads_selected_by(service["spec"]["selector"])
        assert len(selected) == 1, f"Service/{service['metadata']['name']} selects {len(selected)} workloads"
        declared = {
            p["name"] for c in selected[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in declared, (
                f"Service/{service['metadata']['name']}: {port['targetPort']}"
            )
    for pdb in r.of_kind("PodDisruptionBudget"):
        assert len(r.workloads_selected_by(pdb["spec"]["selector"]["matchLabels"])) == 1
    for policy in r.of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert r.workloads_selected_by(selector), policy["metadata"]["name"]


@pytest.mark.parametrize("value_set", SETS)
def test_every_service_has_its_ports_and_agents_a_headless_service(value_set: str) -> None:
    r = render(value_set)
    for deployment in mesh_deployments(r, *GRPC_KINDS):
        service = service_for(r, deployment)
        grpc_port = service_port(service, "grpc")
        assert service_port(service, "http") == grpc_port + 1000, "HTTP side listener = gRPC port + 1000"
        if component(deployment) == "agent":
            headless = r.get("Service", f"{deployment['metadata']['name']}-headless")
            assert headless["spec"]["clusterIP"] == "None"
            assert headless["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
            assert service_port(headless, "grpc") == grpc_port


# --- disruption -----------------------------------------------------------------


@pytest.mark.parametrize("value_set", SETS)
def test_a_pdb_never_blocks_a_single_replica(value_set: str) -> None:
    r = render(value_set)
    for pdb in r.of_kind("PodDisruptionBudget"):
        (deployment,) = r.workloads_selected_by(pdb["spec"]["selector"]["matchLabels"])
        spec = pdb["spec"]
        floor = max(min_replicas(r, deployment), 1)  # a domain KEDA scaled to 0 runs 1 pod first
        if "minAvailable" in spec:
            value = spec["minAvailable"]
            # Kubernetes rounds a percentage up.
            keep = math.ceil(int(value.rstrip("%")) * floor / 100) if isinstance(value, str) else value
            assert keep < floor, (
                f"PDB/{pdb['metadata']['name']}: minAvailable {value} of {floor} blocks eviction"
            )
        else:
            value = spec["maxUnavailable"]
            assert (int(value.rstrip("%")) > 0) if isinstance(value, str) else value >= 1


@pytest.mark.parametrize("value_set", SETS)
def test_termination_grace_outlasts_the_drain(value_set: str) -> None:
    r = render(value_set)
    for deployment in mesh_deployments(r, *GRPC_KINDS):
        settings = Settings.from_env(environ(main_container(deployment)))
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > settings.drain_delay_s + settings.drain_grace_s, deployment["metadata"]["name"]


# --- secrets --------------------------------------------------------------------

SECRET_LOOKING = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\."),  # a JWT
    re.compile(r"://[^/@\s:]*:[^/@\s$]+@"),  # credentials in a URL
    re.compile(r"(?i)(api[_-]?key|password|secret|token)\s*[:=]\s*\S"),
]


@pytest.mark.parametrize("value_set", SETS)
def test_no_secret_values_in_configmaps_or_plain_env(value_set: str) -> None:
    r = render(value_set)
    for config_map in r.of_kind("ConfigMap"):
        for key, text in config_map.get("data", {}).items():
            for pattern in SECRET_LOOKING:
                assert not pattern.search(text), f"ConfigMap/{config_map['metadata']['name']}[{key}]"
    for doc, template in r.pod_templates():
        for container in template["spec"]["containers"]:
            for name, item in container_env(container).items():
                if name in SECRET_ENV:
                    assert "secretKeyRef" in item.get("valueFrom", {}), f"{doc['metadata']['name']}: {name}"
                if name == "REDIS_URL" and "value" in item:
                    assert not SECRET_LOOKING[2].search(item["value"]), "a Redis password only by reference"


# --- the configuration contract -------------------------------------------------


@pytest.mark.parametrize("value_set", SETS)
def test_every_env_name_is_part_of_the_contract(value_set: str) -> None:
    r = render(value_set)
    for deployment in r.of_kind("Deployment"):
        container = main_container(deployment)
        extra = {e["name"] for e in r.values["agentDefaults"]["extraEnv"]}
        for slug_values in r.values["agents"].values():
            extra |= {e["name"] for e in slug_values.get("extraEnv", [])}
        for name in container_env(container):
            assert (
                name in CONTRACT_ALIASES or name.startswith("OTEL_") or name in HELPER_ENV or name in extra
            ), f"{deployment['metadata']['name']}: {name} is read by nobody (docs/configuration.md)"


@pytest.mark.parametrize("value_set", SETS)
def test_the_config_loader_reads_each_services_env_with_the_declared_ports(value_set: str) -> None:
    r = render(value_set)
    for deployment in mesh_deployments(r):
        container = main_container(deployment)
        kind = component(deployment)
        try:
            settings = Settings.from_env(environ(container))
        except ConfigError as exc:  # pragma: no cover - the assertion message is the point
            pytest.fail(f"{deployment['metadata']['name']}: {exc}")
        assert settings.role is Role(kind)
        named = ports_by_name(container)
        if kind == "model":
            assert settings.effective_grpc_port == named["http"]
            continue
        if kind == "console":
            assert console_port(settings) == named["http"] and set(named) == {"http"}
            assert settings.registry and settings.registry.endswith(f":{r.values['registry']['grpcPort']}")
            assert (settings.jwks is not None) != r.values["auth"]["insecureNoAuth"], "it verifies tokens"
            load(entrypoint_for(settings))
            continue
        assert settings.effective_grpc_port == named["grpc"]
        assert settings.effective_http_port == named["http"]
        if settings.tls_enabled:
            assert settings.effective_health_port == named["health"]
        else:
            assert "health" not in named
        assert settings.service_name, "each workload names itself in logs, metrics and traces"
        # The container entrypoint must find what the role names (a tool's module).
        load(entrypoint_for(settings))


@pytest.mark.parametrize("value_set", SETS)
def test_every_agent_gets_the_contract_variables(value_set: str) -> None:
    r = render(value_set)
    values = r.values
    registry = service_for(r, mesh_deployments(r, "registry")[0])
    for deployment in mesh_deployments(r, *GRPC_KINDS):
        kind = component(deployment)
        pod = deployment["spec"]["template"]["spec"]
        container = main_container(deployment)
        env = environ(container)
        name = deployment["metadata"]["name"]
        required = {
            "AGENTMESH_ROLE",
            "AGENTMESH_GRPC_PORT",
            "AGENTMESH_HTTP_PORT",
            "AGENTMESH_ADVERTISE_ADDR",
        }
        required |= {"REDIS_URL", "AGENTMESH_SERVICE_NAME"}
        if kind in ("agent", "tool"):
            required |= {"AGENTMESH_REGISTRY"}
        if kind == "agent":
            required |= {"AGENTMESH_DOMAIN_SPEC", "MODEL_BASE_URL", "AGENTMESH_WORKER_CONCURRENCY"}
            if values["model"]["name"] or values["model"]["scripted"]["enabled"]:
                required |= {"MODEL_NAME"}  # otherwise the domain spec names the model
        if values["auth"]["insecureNoAuth"]:
            assert env["AGENTMESH_INSECURE_NO_AUTH"] == "true"
        else:
            required |= {"AGENTMESH_JWKS"}
            required |= {"AGENTMESH_SIGNING_KEY"} if kind in ("agent", "registry") else set()
            required |= {"AGENTMESH_SERVICE_TOKEN"} if kind in ("agent", "tool") else set()
        if values["tls"]["enabled"]:
            required |= {
                "AGENTMESH_TLS_CERT",
                "AGENTMESH_TLS_KEY",
                "AGENTMESH_TLS_CA",
                "AGENTMESH_HEALTH_PORT",
            }
        if values["tracing"]["enabled"]:
            required |= {"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES"}
            required |= {"OTEL_TRACES_SAMPLER"}
        missing = required - env.keys()
        assert not missing, f"{name}: missing {sorted(missing)}"

        own = service_for(r, deployment)
        assert env["AGENTMESH_ADVERTISE_ADDR"] == f"{dns(own)}:{service_port(own, 'grpc')}", "never a pod IP"
        if kind != "registry":
            assert env["AGENTMESH_REGISTRY"] == f"{dns(registry)}:{service_port(registry, 'grpc')}"
        # Files the env points at are really mounted.
        for variable in (
            "AGENTMESH_DOMAIN_SPEC",
            "AGENTMESH_SIGNING_KEY",
            "AGENTMESH_TLS_CERT",
            "AGENTMESH_TLS_KEY",
        ):
            if variable in env:
                volume, filename = mounted_file(pod, container, env[variable])
                assert volume_provides(volume, filename), f"{name}: {variable} -> {env[variable]}"
        if env.get("AGENTMESH_JWKS", "").startswith("/"):
            volume, filename = mounted_file(pod, container, env["AGENTMESH_JWKS"])
            assert volume_provides(volume, filename)
        if kind == "agent":
            volume, filename = mounted_file(pod, container, env["AGENTMESH_DOMAIN_SPEC"])
            spec_map = r.get("ConfigMap", volume["configMap"]["name"])
            assert filename in spec_map["data"] and spec_map["data"][filename].strip()
            if values["model"]["scripted"]["enabled"]:
                model = service_for(r, mesh_deployments(r, "model")[0])
                assert env["MODEL_BASE_URL"] == f"http://{dns(model)}:{service_port(model, 'http')}/v1"
            else:
                assert env["MODEL_BASE_URL"] == values["model"]["baseUrl"]


def test_spec_given_as_text_is_mounted_verbatim() -> None:
    """A text spec is kept as given; one without a slug only gets `slug: <key>` in front."""
    r = render("03-fixed-replicas-values")
    spec = r.get("ConfigMap", "mesh-agentmesh-agent-refunds")["data"]["spec.yaml"]
    given = VALUE_SETS["03-fixed-replicas-values"]["agents"]["refunds"]["spec"]
    assert "slug:" not in given
    assert spec.rstrip("\n") == "slug: refunds\n" + given.rstrip("\n")


def test_tracing_resource_attributes_name_the_workload() -> None:
    r = render("08-servicemonitor-tracing-values")
    env = environ(main_container(r.get("Deployment", "mesh-agentmesh-agent-refunds")))
    attributes = dict(pair.split("=", 1) for pair in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes["k8s.deployment.name"] == "mesh-agentmesh-agent-refunds"
    assert attributes["deployment.environment"] == "staging"
    assert env["OTEL_SERVICE_NAME"] == "refunds"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"


# --- pod hardening --------------------------------------------------------------


@pytest.mark.parametrize("value_set", SETS)
def test_pods_run_non_root_on_a_read_only_root_filesystem(value_set: str) -> None:
    r = render(value_set)
    discovery = r.values["discovery"]["enabled"]
    pods = [(doc["metadata"]["name"], component(doc), t["spec"]) for doc, t in r.pod_templates()]
    pods += [(p["metadata"]["name"], "test", p["spec"]) for p in r.of_kind("Pod")]
    for name, kind, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        token = pod.get("automountServiceAccountToken", True)
        assert token is (discovery and kind == "registry"), f"{name}: API token only for discovery"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert "ALL" in security["capabilities"]["drop"], name
            assert container["resources"]["requests"], f"{name}: resource requests"
            tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in volumes[tmp["name"]], f"{name}: /tmp is the only writable path"


def discovery_rbac(r: Any, kind: str) -> list[dict[str, Any]]:
    """Roles / RoleBindings of discovery (the auth hook has its own: tests/charts/test_auth.py)."""
    return [doc for doc in r.of_kind(kind) if not doc["metadata"]["name"].endswith("-auth-bootstrap")]


def test_discovery_grants_only_reading_services_and_reporting_on_them() -> None:
    r = render("10-many-domains-values")
    (role,) = discovery_rbac(r, "Role")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    (binding,) = discovery_rbac(r, "RoleBinding")
    registry = r.get("Deployment", "am-registry")["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": registry["serviceAccountName"], "namespace": NAMESPACE}
    ]
    env = {e["name"]: e.get("value") for e in registry["containers"][0]["env"]}
    assert env["AGENTMESH_DISCOVERY_NAMESPACES"] == NAMESPACE
    assert Settings.from_env({k: v for k, v in env.items() if v is not None}).discovery_namespace_list == [
        NAMESPACE
    ]
    for deployment in mesh_deployments(r, "agent"):
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "mesh-workloads"
        agent_env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "AGENTMESH_DISCOVERY_NAMESPACES" not in agent_env


def test_discovery_watches_the_namespaces_it_is_given_and_renders_nothing_when_off() -> None:
    many = VALUE_SETS["10-many-domains-values"]
    r = render_with(
        "ns", merged(many, {"discovery": {"namespaces": ["tools-a", "tools-b"], "events": False}})
    )
    roles = discovery_rbac(r, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["tools-a", "tools-b"]
    assert all(len(role["rules"]) == 1 for role in roles)
    bindings = discovery_rbac(r, "RoleBinding")
    assert all(b["subjects"][0]["namespace"] == NAMESPACE for b in bindings) and len(bindings) == 2
    registry = r.get("Deployment", "am-registry")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in registry["containers"][0]["env"]}
    assert env["AGENTMESH_DISCOVERY_NAMESPACES"] == "tools-a,tools-b"
    off = render_with("off", merged(many, {"discovery": {"enabled": False}}))
    assert not discovery_rbac(off, "Role") and not discovery_rbac(off, "RoleBinding")
    off_env = off.get("Deployment", "am-registry")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "AGENTMESH_DISCOVERY_NAMESPACES" not in {e["name"] for e in off_env}


# --- Redis ----------------------------------------------------------------------


@pytest.mark.parametrize("value_set", SETS)
def test_bundled_redis_persists_with_aof(value_set: str) -> None:
    r = render(value_set)
    bundled = r.values["redis"]["bundled"]
    statefulsets = r.of_kind("StatefulSet")
    assert len(statefulsets) == int(bundled["enabled"])
    for sts in statefulsets:
        args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
        options = dict(zip(args[::2], args[1::2], strict=True))
        assert options["--appendonly"] == "yes"
        assert options["--appendfsync"] == bundled["appendfsync"]
        assert options["--maxmemory-policy"] == "noeviction", "mesh state must never be evicted"
        claims = sts["spec"].get("volumeClaimTemplates", [])
        assert bool(claims) == bundled["persistence"]["enabled"]
        if bundled["auth"]["existingSecret"]:
            assert options["--requirepass"] == "$(REDIS_PASSWORD)"


# --- network, metrics, helm test ---------------------------------------------------


@pytest.mark.parametrize("value_set", SETS)
def test_network_policies_cover_every_pod_once(value_set: str) -> None:
    r = render(value_set)
    policies = r.of_kind("NetworkPolicy")
    if not r.values["networkPolicy"]["enabled"]:
        assert not policies
        return
    for doc, template in r.pod_templates():
        labels = template["metadata"]["labels"]
        covering = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{doc['metadata']['name']}: {len(covering)} policies"
        egress = covering[0]["spec"]["egress"]
        if component(doc) == "redis":
            assert egress == []
            continue
        assert any(p["port"] == 53 for rule in egress for p in rule.get("ports", [])), "DNS egress"
        if r.values["tracing"]["enabled"] and component(doc) != "model":
            assert r.values["networkPolicy"]["otlpEgress"] in egress
    if not r.values["networkPolicy"]["allowExternal"]:
        agents = r.get("NetworkPolicy", "mesh-agentmesh-agent")
        assert all("from" in rule for rule in agents["spec"]["ingress"][:2])


@pytest.mark.parametrize("value_set", SETS)
def test_service_monitor_scrapes_each_metrics_service_once(value_set: str) -> None:
    r = render(value_set)
    monitors = r.of_kind("ServiceMonitor")
    assert len(monitors) == int(r.values["metrics"]["serviceMonitor"]["enabled"])
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        scraped = [s for s in r.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
        expected = [service_for(r, d) for d in mesh_deployments(r, *GRPC_KINDS)]
        assert sorted(s["metadata"]["name"] for s in scraped) == sorted(
            s["metadata"]["name"] for s in expected
        )
        for endpoint in monitor["spec"]["endpoints"]:
            assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in scraped)
            assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize("value_set", SETS)
def test_helm_test_checks_the_health_of_every_service(value_set: str) -> None:
    r = render(value_set)
    pods = r.of_kind("Pod")
    if not r.values["tests"]["enabled"]:
        assert not pods
        return
    (pod,) = pods
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    checks = {c["name"]: c for c in pod["spec"]["containers"]}
    assert "redis" in checks
    for deployment in mesh_deployments(r):
        kind = component(deployment)
        labels = deployment["metadata"]["labels"]
        key = labels.get("agentmesh.io/domain") or labels.get("agentmesh.io/tool")
        check = checks[f"{kind}-{key}" if key else kind]
        service = service_for(r, deployment)
        if kind == "model":
            assert check["args"][1:] == [dns(service), str(service_port(service, "http"))]
            continue
        if kind == "console":
            assert check["args"][1:] == [f"http://{dns(service)}:{service_port(service, 'http')}/healthz"]
            continue
        assert check["command"] == ["agentmesh", "health"]
        target, service_flag, health_service, *_ = check["args"]
        probe = main_container(deployment)["readinessProbe"]["grpc"]
        assert target == f"{dns(service)}:{probe['port']}"
        assert probe["port"] in {p["port"] for p in service["spec"]["ports"]}
        assert (service_flag, health_service) == ("--service", probe.get("service", ""))


@pytest.mark.parametrize("value_set", SETS)
def test_notes_tell_how_to_call_an_agent_and_where_metrics_are(value_set: str) -> None:
    r = render(value_set)
    assert f"helm test mesh -n {NAMESPACE}" in r.notes
    assert "/metrics" in r.notes
    agents = mesh_deployments(r, "agent")
    if not agents:
        assert "No agent domains are configured" in r.notes
        return
    first = min(agents, key=lambda d: d["metadata"]["name"])
    service = service_for(r, first)
    assert f"port-forward svc/{service['metadata']['name']} {service_port(service, 'grpc')}" in r.notes
    assert f"localhost:{service_port(service, 'grpc')} agentmesh.v1.AgentService/Run" in r.notes
    assert (
        ("-servername " + dns(service)) in r.notes if r.values["tls"]["enabled"] else "-plaintext" in r.notes
    )
    assert "/.well-known/agent-card.json" in r.notes


def test_probe_health_names_are_the_services_full_names() -> None:
    from agentmesh.v1 import agent_service_pb2
    from tool_registry.service import SERVICE

    served = {
        "agent": agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
        "registry": SERVICE.full_name,
    }
    assert served == HEALTH_SERVICES

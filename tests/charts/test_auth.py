"""The chart's authentication: the hook that makes the key, the JWKS ConfigMap, IdP issuers, and
the `helm test` call with a minted token (run here for real against a server that verifies it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from agentmesh.kit.auth import generate_issuer_key, mesh_auth
from agentmesh.kit.testing import local_settings, running_host
from tests.charts.chart import VALUE_SETS, container_env, render, render_values
from tests.charts.test_helm_test_pod import argv, run
from tests.support.sample_service import SampleAgent, registration

HOOK = "pre-install,pre-upgrade"


def _documents(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = render_values(values)
    return [
        d
        for path, text in rendered.items()
        if not path.endswith(".txt")
        for d in yaml.safe_load_all(text)
        if d
    ]


def _hook_args(job: dict[str, Any]) -> dict[str, list[str]]:
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    found: dict[str, list[str]] = {}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        found.setdefault(flag.removeprefix("--"), []).append(value)
    return found


def test_the_hook_makes_the_secret_every_pod_reads_and_the_jwks_configmap() -> None:
    rendered = render("01-hpa-cpu-values")
    (job,) = rendered.of_kind("Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == HOOK
    args = _hook_args(job)
    (secret,), (configmap,) = args["secret"], args["configmap"]
    # Its Role creates and reads only these two.
    role = rendered.get("Role", job["metadata"]["name"])
    reads = {tuple(rule["resourceNames"]) for rule in role["rules"] if rule["verbs"] == ["get"]}
    assert reads == {(secret,), (configmap,)}
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == job["metadata"]["name"]
    tokens_needed = set()
    for _, template in rendered.pod_templates():
        spec = template["spec"]
        for container in spec["containers"]:
            env = container_env(container)
            if "AGENTMESH_SERVICE_TOKEN" in env:
                ref = env["AGENTMESH_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret
                tokens_needed.add(ref["key"])
        sources = {
            kind: source[kind]["name"]
            for volume in spec.get("volumes", [])
            if volume["name"] == "auth"
            for source in volume["projected"]["sources"]
            for kind in source
        }
        if sources:
            assert sources["configMap"] == configmap  # the JWKS
            assert sources.get("secret", secret) == secret  # the signing key
    assert tokens_needed == {f"token-{name}" for name in args["service"]} and tokens_needed


def test_no_hook_with_your_own_secrets_or_auth_off() -> None:
    for name in ("06-mtls-values", "09-tools-scripted-model-values"):
        assert render(name).of_kind("Job") == [], name
    own = {**VALUE_SETS["01-hpa-cpu-values"], "auth": {"existingSecret": "mine"}}
    docs = _documents(own)
    assert not [d for d in docs if d["kind"] == "Job"]


def test_idp_issuers_reach_every_service() -> None:
    values = {**VALUE_SETS["01-hpa-cpu-values"], "auth": {"issuers": ["https://idp.example.com/"]}}
    docs = _documents(values)
    envs = [
        container_env(c)
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert envs and all(
        env["AGENTMESH_JWT_ISSUERS"]["value"] == "https://idp.example.com/"
        for env in envs
        if "AGENTMESH_JWKS" in env
    )


async def test_helm_test_calls_an_agent_with_a_token_minted_from_the_mesh_key(tmp_path: Path) -> None:
    (pod,) = render("01-hpa-cpu-values").of_kind("Pod")
    (call,) = [c for c in pod["spec"]["containers"] if c["name"] == "agent-call"]
    env = {e["name"]: e["value"] for e in call["env"]}
    key_path = env["AGENTMESH_SIGNING_KEY"]
    assert any(m["mountPath"] == str(Path(key_path).parent) for m in call["volumeMounts"])
    domain = call["args"][2]
    mesh_key, other_key = tmp_path / "mesh.pem", tmp_path / "other.pem"
    mesh_key.write_bytes(generate_issuer_key().pem())
    other_key.write_bytes(generate_issuer_key().pem())
    settings = local_settings(signing_key=mesh_key)
    authenticator = mesh_auth(settings).authenticator(audiences=(domain,))
    agent = SampleAgent()
    agent.release.set()
    async with running_host([registration(agent)], settings=settings, authenticator=authenticator) as (
        host,
        _,
    ):
        command = argv(call, (1, f"127.0.0.1:{host.grpc_port}"))
        code, output = await run(command, AGENTMESH_SIGNING_KEY=str(mesh_key))
        assert (code, output.strip()) == (0, "AUTHENTICATED 0"), output
        # A token from any other key is refused, and the check fails.
        code, output = await asyncio.wait_for(run(command, AGENTMESH_SIGNING_KEY=str(other_key)), 60)
        assert code != 0 and "UNAUTHENTICATED" in output

"""The chart's pre-install hook: the mesh issuer key, its JWKS and the service tokens, made once.

    python -m agentmesh.cli.auth_bootstrap --secret agentmesh-auth --configmap agentmesh-jwks \
        --service agent-refunds --service tool-payments

In the cluster (the hook Job's ServiceAccount may get and create Secrets and
ConfigMaps in its namespace), it creates

- the Secret: `signing-key.pem` (EdDSA), `jwks.json`, and for every `--service
  NAME` a `token-NAME` service token (`sub` = `service:NAME`, `registry:write`);
- the ConfigMap: `jwks.json`, the public keys, for anything else that verifies
  mesh tokens.

An existing Secret is kept as it is (upgrades and re-installs never rotate the
key or invalidate tokens); a missing ConfigMap is recreated from its JWKS. Both
outlive `helm uninstall` on purpose: delete them to start over. Nothing secret
is printed. The Kubernetes API is reached as in-cluster clients do (the
ServiceAccount token and CA under /var/run/secrets/kubernetes.io/serviceaccount).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentmesh.kit.auth import TokenIssuer, generate_issuer_key, jwks_document
from agentmesh.kit.auth.keys import parse_issuer_keys

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_SCOPES = ("registry:write",)


def secret_data(services: Sequence[str], *, algorithm: str = "EdDSA") -> dict[str, str]:
    """A new issuer key, its JWKS and one service token per service (the Secret's data, as text)."""
    key = generate_issuer_key(algorithm)
    issuer = TokenIssuer([key])
    data = {"signing-key.pem": key.pem().decode(), "jwks.json": json.dumps(jwks_document([key]))}
    for name in services:
        data[f"token-{name}"] = issuer.service_token(name, scopes=SERVICE_SCOPES)
    return data


def public_jwks(signing_key_pem: str) -> str:
    return json.dumps(jwks_document(parse_issuer_keys(signing_key_pem.encode(), source="the Secret")))


class Kubernetes:
    """The few calls the hook needs, over the in-cluster API endpoint."""

    def __init__(self, base_url: str, token: str, context: ssl.SSLContext | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._context = context

    @classmethod
    def in_cluster(cls) -> Kubernetes:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise SystemExit("not in a Kubernetes pod: KUBERNETES_SERVICE_HOST/PORT are not set")
        token = (SERVICE_ACCOUNT / "token").read_text().strip()
        context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        return cls(f"https://{host}:{port}", token, context)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"authorization": f"Bearer {self._token}", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30, context=self._context) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, None


def ensure(
    api: Kubernetes,
    namespace: str,
    secret: str,
    configmap: str,
    services: Sequence[str],
    labels: dict[str, str],
) -> str:
    """Create what is missing; returns what was done (no secret in it)."""
    base = f"/api/v1/namespaces/{namespace}"
    status, found = api.request("GET", f"{base}/secrets/{secret}")
    if status == 200:
        outcome = f"Secret {secret} exists: kept"
        signing_key = base64.b64decode(found["data"]["signing-key.pem"]).decode()
    elif status == 404:
        data = secret_data(services)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": namespace, "labels": labels},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        created, _ = api.request("POST", f"{base}/secrets", body)
        if created not in (200, 201):
            raise SystemExit(f"creating Secret {secret} failed: HTTP {created}")
        outcome = f"Secret {secret} created with {len(services)} service tokens"
        signing_key = data["signing-key.pem"]
    else:
        raise SystemExit(f"reading Secret {secret} failed: HTTP {status}")
    status, _ = api.request("GET", f"{base}/configmaps/{configmap}")
    if status == 404:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": configmap, "namespace": namespace, "labels": labels},
            "data": {"jwks.json": public_jwks(signing_key)},
        }
        created, _ = api.request("POST", f"{base}/configmaps", body)
        if created not in (200, 201):
            raise SystemExit(f"creating ConfigMap {configmap} failed: HTTP {created}")
        outcome += f"; ConfigMap {configmap} created"
    elif status != 200:
        raise SystemExit(f"reading ConfigMap {configmap} failed: HTTP {status}")
    return outcome


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agentmesh.cli.auth_bootstrap")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--configmap", required=True)
    parser.add_argument("--service", action="append", default=[], help="a service token `token-NAME`")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE on what is created")
    parser.add_argument("--namespace", default=None)
    args = parser.parse_args(argv)
    namespace = args.namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()
    labels = dict(item.split("=", 1) for item in args.label)
    print(ensure(Kubernetes.in_cluster(), namespace, args.secret, args.configmap, args.service, labels))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""The chart's auth hook (agentmesh.cli.auth_bootstrap) against an HTTP stand-in for the Kubernetes API.

No API server runs here, so a small in-memory one answers the four calls the hook
makes (GET/POST of Secrets and ConfigMaps, as the API does: 404 when absent, 201
on create, 409 on a second create). The key, JWKS and tokens are real: the tokens
verify against the ConfigMap's JWKS with the mesh verifier.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentmesh.cli.auth_bootstrap import Kubernetes, ensure
from agentmesh.kit.auth import MESH_AUDIENCE, TokenVerifier, TrustedKeys
from agentmesh.kit.auth.trust import _parse_jwks

pytestmark = pytest.mark.integration


class FakeApi(BaseHTTPRequestHandler):
    objects: dict[str, dict[str, Any]] = {}
    seen_tokens: list[str] = []
    refuse_post = 0

    def _reply(self, status: int, body: Any = None) -> None:
        payload = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self.seen_tokens.append(self.headers.get("authorization", ""))
        found = self.objects.get(self.path)
        self._reply(200, found) if found is not None else self._reply(404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.refuse_post:
            self._reply(self.refuse_post)
            return
        path = f"{self.path}/{body['metadata']['name']}"
        if path in self.objects:
            self._reply(409)
            return
        self.objects[path] = body
        self._reply(201, body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[Kubernetes]:
    FakeApi.objects = {}
    FakeApi.seen_tokens = []
    FakeApi.refuse_post = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Kubernetes(f"http://127.0.0.1:{server.server_port}", "sa-token", None)
    finally:
        server.shutdown()


async def test_creates_key_jwks_and_service_tokens_once(api: Kubernetes) -> None:
    services = ["agent-refunds", "tool-payments"]
    said = ensure(api, "mesh", "am-auth", "am-jwks", services, {"app": "agentmesh"})
    assert said == "Secret am-auth created with 2 service tokens; ConfigMap am-jwks created"
    secret = FakeApi.objects["/api/v1/namespaces/mesh/secrets/am-auth"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {"signing-key.pem", "jwks.json", "token-agent-refunds", "token-tool-payments"}
    jwks = json.loads(FakeApi.objects["/api/v1/namespaces/mesh/configmaps/am-jwks"]["data"]["jwks.json"])
    assert jwks == json.loads(data["jwks.json"]) and all("d" not in key for key in jwks["keys"])
    assert secret["metadata"]["labels"] == {"app": "agentmesh"}
    verifier = TokenVerifier(TrustedKeys())
    verifier.keys._external = _parse_jwks(jwks, "configmap")
    principal = await verifier.verify(data["token-tool-payments"], audiences=(MESH_AUDIENCE,))
    assert principal.subject == "service:tool-payments" and principal.scopes == {"registry:write"}
    # Nothing secret in what it says.
    assert all(value[:20] not in said for value in data.values())
    # Again (an upgrade): the Secret is kept as it is; a deleted ConfigMap comes back from it.
    del FakeApi.objects["/api/v1/namespaces/mesh/configmaps/am-jwks"]
    again = ensure(api, "mesh", "am-auth", "am-jwks", [*services, "tool-crm"], {})
    assert again == "Secret am-auth exists: kept; ConfigMap am-jwks created"
    assert FakeApi.objects["/api/v1/namespaces/mesh/secrets/am-auth"] == secret
    restored = FakeApi.objects["/api/v1/namespaces/mesh/configmaps/am-jwks"]["data"]["jwks.json"]
    assert json.loads(restored) == jwks
    assert set(FakeApi.seen_tokens) == {"Bearer sa-token"}


def test_a_refused_create_fails_the_hook(api: Kubernetes) -> None:
    FakeApi.refuse_post = 403  # e.g. the hook's Role is missing
    with pytest.raises(SystemExit, match="creating Secret am-auth failed: HTTP 403"):
        ensure(api, "mesh", "am-auth", "am-jwks", ["tool-crm"], {})
    assert FakeApi.objects == {}

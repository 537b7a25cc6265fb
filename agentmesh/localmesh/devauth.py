"""The local mesh's dev issuer: one key under the state directory, the tokens `agentmesh up` hands out.

`dev_issuer(state_dir)` loads `<state>/auth/issuer.pem` (generating it on the
first start, so tokens in the CLI profile stay valid across restarts) and
writes its public JWKS beside it. The registry and the agents hold the key
(they verify callers and mint tool and delegation tokens); tools and the
scripted model get only the JWKS. Each process gets a service token
(`sub` = `service:<its service name>`, scope `registry:write`), and the CLI
profile gets a demo user token and a separate approver's token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentmesh.kit.auth import (
    IssuerKey,
    Principal,
    TokenIssuer,
    generate_issuer_key,
    jwks_document,
    load_issuer_keys,
)
from agentmesh.kit.config import Settings

DEMO_TENANT = "default"
DEMO_USER = "demo"
APPROVER_USER = "approver"
# What the demo user may do: the example tools' scopes, but not approving refunds.
DEMO_SCOPES = (
    "crm:read",
    "email:read",
    "email:send",
    "inventory:read",
    "inventory:write",
    "payments:charge",
    "payments:read",
    "payments:refund",
    "shipping:read",
    "shipping:write",
)
APPROVER_SCOPES = ("refunds:approve", "fulfillment:approve", "crm:read", "payments:read")
# A user of the `denied` story: everything the demo user has except refunding.
NO_REFUND_SCOPES = tuple(scope for scope in DEMO_SCOPES if scope != "payments:refund")
SERVICE_SCOPES = ("registry:write",)
USER_TOKEN_TTL_S = 7 * 86400.0


@dataclass(frozen=True)
class DevIssuer:
    key_path: Path
    jwks_path: Path
    issuer: TokenIssuer

    def service_token(self, name: str) -> str:
        return self.issuer.service_token(name, scopes=SERVICE_SCOPES)

    def user_token(self, user: str = DEMO_USER, scopes: tuple[str, ...] = DEMO_SCOPES) -> str:
        return self.issuer.user_token(user=user, tenant=DEMO_TENANT, scopes=scopes, ttl_s=USER_TOKEN_TTL_S)

    def approver_token(self) -> str:
        return self.user_token(APPROVER_USER, APPROVER_SCOPES)


def dev_issuer(state_dir: Path) -> DevIssuer:
    """The dev issuer of the mesh in `state_dir` (its key generated once, mode 0600)."""
    folder = state_dir / "auth"
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / "issuer.pem"
    keys: list[IssuerKey]
    if key_path.exists():
        keys = load_issuer_keys(key_path)
    else:
        keys = [generate_issuer_key()]
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(keys[0].pem())
    jwks_path = folder / "jwks.json"
    jwks_path.write_text(json.dumps(jwks_document(keys), indent=2))
    return DevIssuer(key_path.resolve(), jwks_path.resolve(), TokenIssuer(keys))


def issuer_from_key(key_path: Path) -> DevIssuer:
    """A dev issuer over an existing key file (e.g. AGENTMESH_SIGNING_KEY); its JWKS is not written."""
    return DevIssuer(key_path, key_path, TokenIssuer(load_issuer_keys(key_path)))


def mesh_issuer(state_dir: Path) -> DevIssuer | None:
    """The issuer of the local mesh in `state_dir`: AGENTMESH_SIGNING_KEY (the configuration
    contract), else that mesh's dev issuer; None when it runs with auth off or was never started."""
    explicit = Settings.from_env().signing_key
    if explicit is not None:
        return issuer_from_key(explicit)
    state_file = state_dir / "mesh.json"
    if state_file.exists() and json.loads(state_file.read_text()).get("auth") == "off":
        return None
    if not (state_dir / "auth" / "issuer.pem").exists():
        return None
    return dev_issuer(state_dir)


def operator_credentials(issuer: DevIssuer | None) -> Callable[[str], list[tuple[str, str]]]:
    """Metadata for the local mesh's operator calls that are not tools (the dummy's Configure and
    Stats): a token for the demo user whose audience is the method itself."""

    def credentials(method: str) -> list[tuple[str, str]]:
        if issuer is None:
            return []
        operator = Principal(subject=DEMO_USER, tenant=DEMO_TENANT)
        token = issuer.issuer.tool_token(tool=method, principal=operator, scopes=(), actor="operator")
        return [("authorization", f"Bearer {token}")]

    return credentials

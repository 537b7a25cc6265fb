"""Real tokens for tests: one mesh issuer key per test session, minted with the kit's TokenIssuer.

    settings = local_settings(signing_key=key_path(), ...)   # a service that verifies (and mints)
    stub.GetTask(request, metadata=bearer(user="bob", scopes=("refunds:approve",)))

`key_path()` writes the session key (a PEM bundle, as `agentmesh keys generate` does) once per
process; `token()` / `bearer()` mint user tokens for `agentmesh` (any agent); the default identity
(tenant `default`, user `anonymous`, the demo domains' scopes) is what most tests call as.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from agentmesh.kit import metadata as md
from agentmesh.kit.auth import MESH_AUDIENCE, IssuerKey, TokenIssuer, generate_issuer_key
from agentmesh.kit.auth.keys import jwks_document

DEFAULT_TENANT = "default"
DEFAULT_USER = "anonymous"
# What a test caller holds unless it asks for less: every scope the shipped and fixture domains
# and the example tools require, so tests that are not about authorization are not refused.
DEFAULT_SCOPES: tuple[str, ...] = (
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

_key: IssuerKey | None = None
_path: Path | None = None


def issuer_key() -> IssuerKey:
    global _key
    if _key is None:
        _key = generate_issuer_key()
    return _key


def issuer() -> TokenIssuer:
    return TokenIssuer([issuer_key()])


def key_path() -> Path:
    """The session key as a PEM file (AGENTMESH_SIGNING_KEY), written once per process."""
    global _path
    if _path is None:
        fd, name = tempfile.mkstemp(prefix="agentmesh-test-key-", suffix=".pem")
        with os.fdopen(fd, "wb") as handle:
            handle.write(issuer_key().pem())
        _path = Path(name)
        atexit.register(_remove, _path)
    return _path


def jwks_path() -> Path:
    """The session key's public JWKS as a file (AGENTMESH_JWKS for a service that only verifies)."""
    path = key_path().with_suffix(".jwks.json")
    if not path.exists():
        import json

        path.write_text(json.dumps(jwks_document([issuer_key()])))
        atexit.register(_remove, path)
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def token(
    *,
    user: str = DEFAULT_USER,
    tenant: str = DEFAULT_TENANT,
    scopes: Iterable[str] = DEFAULT_SCOPES,
    audience: str = MESH_AUDIENCE,
    ttl_s: float = 3600,
) -> str:
    return issuer().user_token(user=user, tenant=tenant, scopes=scopes, audience=audience, ttl_s=ttl_s)


def bearer(
    *,
    user: str = DEFAULT_USER,
    tenant: str = DEFAULT_TENANT,
    scopes: Iterable[str] = DEFAULT_SCOPES,
    audience: str = MESH_AUDIENCE,
) -> list[tuple[str, str]]:
    """Call metadata carrying a fresh user token."""
    return [(md.AUTHORIZATION, f"Bearer {token(user=user, tenant=tenant, scopes=scopes, audience=audience)}")]

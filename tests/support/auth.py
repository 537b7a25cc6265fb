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
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from agentmesh.kit import metadata as md
from agentmesh.kit.auth import MESH_AUDIENCE, IssuerKey, Principal, TokenIssuer, generate_issuer_key
from agentmesh.kit.auth.keys import jwks_document
from agentmesh.kit.channels import create_channel

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


class _Bearer:
    """Adds `authorization: Bearer <token>` to every call that does not carry its own."""

    def __init__(self, token: str) -> None:
        self.pair = (md.AUTHORIZATION, f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        if any(key == md.AUTHORIZATION for key, _ in metadata):
            return details
        return details._replace(metadata=grpc.aio.Metadata(*metadata, self.pair))


# grpc.aio files an interceptor under the first kind it is an instance of: one object per kind.
class _UnaryBearer(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamBearer(_Bearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def authorized_channel(target: str, **kwargs: Any) -> grpc.aio.Channel:
    """A channel whose calls carry the default test token unless they bring their own."""
    token_kwargs = {k: kwargs.pop(k) for k in ("user", "tenant", "scopes") if k in kwargs}
    minted = token(**token_kwargs)
    return create_channel(target, interceptors=(_UnaryBearer(minted), _StreamBearer(minted)), **kwargs)


def tool_minter(
    *, user: str = DEFAULT_USER, tenant: str = DEFAULT_TENANT, scopes: Iterable[str] = DEFAULT_SCOPES
) -> Callable[[Any, Any], str]:
    """A `CallContext.mint` for tests that call tools directly: a tool token per call, as an agent mints."""
    principal = Principal(subject=user, tenant=tenant, scopes=frozenset(scopes))

    def mint(spec: Any, request: Any) -> str:
        granted = principal.scopes & frozenset(spec.required_scopes)
        return issuer().tool_token(tool=spec.name, principal=principal, scopes=granted, actor="test")

    return mint

"""Who may call what: every RPC's caller verified at the server edge, scopes per method in one table.

`Authenticator.authenticate(method, metadata)` runs in the edge interceptor
before any handler: public methods (health, reflection) pass; everything else
needs a valid bearer token for one of the method's audiences, and the scopes
the method's `MethodRule` names (PERMISSION_DENIED naming the missing scope).
With `insecure=True` (AGENTMESH_INSECURE_NO_AUTH, development only) the caller
names itself in `x-agentmesh-tenant` / `-user` / `-scopes` headers instead.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentmesh.kit import metadata as md
from agentmesh.kit.auth.keys import IssuerKey, KeyFileError, load_issuer_keys
from agentmesh.kit.auth.principal import Principal
from agentmesh.kit.auth.tokens import MESH_ISSUER, TokenIssuer, TokenVerifier, bearer_token
from agentmesh.kit.auth.trust import JwksError, TrustedKeys
from agentmesh.kit.config import ConfigError, Settings
from agentmesh.kit.errors import FieldViolation, InvalidArgument, PermissionDenied, Unauthenticated
from agentmesh.kit.validation import OPAQUE_ID
from agentmesh.v1 import errors_pb2

log = logging.getLogger(__name__)

PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
DEV_TENANT = "default"
DEV_USER = "anonymous"
# Insecure mode only: the caller's scopes, space-separated.
DEV_SCOPES = "x-agentmesh-scopes"


@dataclass(frozen=True, slots=True)
class MethodRule:
    """What one RPC needs: scopes (all of them) and, when set, its own audiences."""

    scopes: tuple[str, ...] = ()
    audiences: tuple[str, ...] | None = None
    public: bool = False


PUBLIC = MethodRule(public=True)


class Authenticator:
    def __init__(
        self,
        verifier: TokenVerifier | None,
        *,
        audiences: Collection[str],
        rules: Mapping[str, MethodRule] | None = None,
        insecure: bool = False,
    ) -> None:
        if verifier is None and not insecure:
            raise ValueError("an Authenticator without a verifier must be insecure")
        self.verifier = verifier
        self.audiences = tuple(audiences)
        self.rules = dict(rules or {})
        self.insecure = insecure

    def rule(self, full_method: str) -> MethodRule:
        method = full_method.lstrip("/")
        service = method.rpartition("/")[0]
        if service in PUBLIC_SERVICES:
            return PUBLIC
        return self.rules.get(method, _AUTHENTICATED)

    async def authenticate(
        self, full_method: str, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> Principal | None:
        rule = self.rule(full_method)
        if rule.public:
            return None
        if self.insecure:
            principal = dev_principal(metadata)
        else:
            assert self.verifier is not None
            token = bearer_token(metadata)
            if token is None:
                raise Unauthenticated(
                    "this call needs 'authorization: Bearer <token>' metadata", metadata={"cause": "missing"}
                )
            principal = await self.verifier.verify(token, audiences=rule.audiences or self.audiences)
        require_scopes(principal, rule.scopes)
        return principal


_AUTHENTICATED = MethodRule()


def require_scopes(principal: Principal, scopes: Iterable[str]) -> None:
    """PERMISSION_DENIED naming the first scope the principal lacks."""
    for scope in scopes:
        if scope not in principal.scopes:
            raise PermissionDenied(
                f"this call needs the {scope!r} scope",
                reason=errors_pb2.ERROR_REASON_MISSING_SCOPE,
                metadata={"scope": scope},
            )


def dev_principal(metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
    """Insecure mode only: the identity the caller names in headers."""
    values = {k.lower(): v for k, v in metadata or () if isinstance(v, str)}
    tenant = values.get(md.TENANT, "").strip() or DEV_TENANT
    user = values.get(md.USER, "").strip() or DEV_USER
    problems = [
        FieldViolation(key, f"{value[:80]!r} must match {OPAQUE_ID.pattern}", "PATTERN")
        for key, value in ((md.TENANT, tenant), (md.USER, user))
        if not OPAQUE_ID.fullmatch(value)
    ]
    depth_text = values.get(md.DELEGATION_DEPTH, "0").strip() or "0"
    if not depth_text.isdigit() or int(depth_text) > 64:
        problems.append(FieldViolation(md.DELEGATION_DEPTH, f"{depth_text[:20]!r} is not a depth (0-64)"))
    if problems:
        raise InvalidArgument(
            f"invalid caller metadata: {', '.join(p.field for p in problems)}", violations=problems
        )
    return Principal(
        subject=user,
        tenant=tenant,
        scopes=frozenset(values.get(DEV_SCOPES, "").split()),
        depth=int(depth_text),
        authenticated=False,
    )


@dataclass(frozen=True)
class MeshAuth:
    """What a process needs for auth, built once from the settings."""

    verifier: TokenVerifier | None
    issuer: TokenIssuer | None
    keys: list[IssuerKey]
    insecure: bool

    def authenticator(
        self, *, audiences: Collection[str], rules: Mapping[str, MethodRule] | None = None
    ) -> Authenticator:
        return Authenticator(self.verifier, audiences=audiences, rules=rules, insecure=self.insecure)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS this process trusts (its signing keys and an AGENTMESH_JWKS file)."""
        if self.verifier is not None:
            return self.verifier.keys.document()
        return {"keys": [key.public() for key in self.keys]}


def mesh_auth(settings: Settings, *, need_issuer: bool = False) -> MeshAuth:
    """Keys, verifier and issuer from AGENTMESH_SIGNING_KEY / AGENTMESH_JWKS / AGENTMESH_INSECURE_NO_AUTH.

    Auth is on unless insecure mode is asked for explicitly; on without any key to
    verify with is a configuration error, not an open door.
    """
    try:
        keys = load_issuer_keys(settings.signing_key) if settings.signing_key else []
        issuers = (MESH_ISSUER, *settings.trusted_issuers)
        trusted = TrustedKeys(issuer_keys=keys, jwks=settings.jwks) if (keys or settings.jwks) else None
    except (KeyFileError, JwksError) as exc:
        raise ConfigError(str(exc)) from None
    if need_issuer and not keys and not settings.insecure_no_auth:
        raise ConfigError(
            "AGENTMESH_SIGNING_KEY is required: this service mints tokens (generate one with "
            "`agentmesh keys generate`), or set AGENTMESH_INSECURE_NO_AUTH=true for local development"
        )
    if settings.insecure_no_auth:
        log.warning(
            "AUTHENTICATION IS OFF (AGENTMESH_INSECURE_NO_AUTH): callers name themselves in headers; "
            "never run like this outside local development"
        )
        verifier = TokenVerifier(trusted, issuers=issuers) if trusted else None
        return MeshAuth(verifier, TokenIssuer(keys) if keys else None, keys, True)
    if trusted is None:
        raise ConfigError(
            "authentication is on but no key to verify tokens with: set AGENTMESH_JWKS (a file or URL) "
            "or AGENTMESH_SIGNING_KEY, or AGENTMESH_INSECURE_NO_AUTH=true for local development"
        )
    return MeshAuth(TokenVerifier(trusted, issuers=issuers), TokenIssuer(keys) if keys else None, keys, False)

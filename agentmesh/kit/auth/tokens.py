"""Minting and verifying the mesh's JWTs (DESIGN.md, "Identity").

Claims: `iss`, `aud`, `sub` (user, or `service:<name>`), `tid` (tenant),
`scope` (space-separated), `exp`, `iat`, `nbf`, `jti`; delegation tokens add
`act: {sub: "agent:<domain>"}` and `depth`; tool tokens carry `aud` = the tool
name and the user's scopes ∩ the tool's (reused while fresh, `reuse.py`), and
an approved call's token, minted for that call, `task`/`step` and the
`approval` claim bound to the call's arguments.

`TokenVerifier.verify` is the one check: size, structure, a kid the trusted
keys know, the algorithm that key allows (never `none`, never HS*), signature,
issuer, audience, `exp`/`nbf` with a small leeway, required claims. Results are
cached per token until it expires, so a caller re-using its token pays the
signature check once.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Collection, Iterable
from typing import Any

import jwt
from jwt.exceptions import InvalidTokenError

from agentmesh.kit.auth.keys import IssuerKey
from agentmesh.kit.auth.principal import AGENT_PREFIX, SERVICE_PREFIX, Approval, Principal
from agentmesh.kit.auth.trust import TrustedKeys
from agentmesh.kit.errors import Unauthenticated
from agentmesh.kit.validation import OPAQUE_ID

MESH_ISSUER = "agentmesh"
# `aud` of a token good for any agent and the registry.
MESH_AUDIENCE = "agentmesh"
MAX_TOKEN_BYTES = 16 * 1024
DEFAULT_LEEWAY_S = 30.0
MAX_TOOL_TOKEN_TTL_S = 300.0
DEFAULT_USER_TTL_S = 3600.0
# Delegation chains deeper than this are refused whatever a domain allows.
MAX_DEPTH = 16


def _scope_text(scopes: Iterable[str]) -> str:
    return " ".join(sorted(set(scopes)))


def parse_scopes(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):  # some IdPs send a list (`scp`)
        return frozenset(str(item) for item in value)
    return frozenset()


class TokenIssuer:
    """Mints tokens with the mesh issuer's first key (the signer)."""

    def __init__(self, keys: list[IssuerKey], *, issuer: str = MESH_ISSUER) -> None:
        if not keys:
            raise ValueError("the mesh issuer needs at least one signing key")
        self.keys = keys
        self.signer = keys[0]
        self.issuer = issuer

    def _sign(self, claims: dict[str, Any], ttl_s: float) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + max(1, int(ttl_s)),
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(
            payload,
            self.signer.private_key,
            algorithm=self.signer.algorithm,
            headers={"kid": self.signer.kid},
        )

    def user_token(
        self,
        *,
        user: str,
        tenant: str,
        scopes: Iterable[str] = (),
        audience: str = MESH_AUDIENCE,
        ttl_s: float = DEFAULT_USER_TTL_S,
    ) -> str:
        return self._sign({"sub": user, "tid": tenant, "aud": audience, "scope": _scope_text(scopes)}, ttl_s)

    def service_token(
        self,
        name: str,
        *,
        scopes: Iterable[str] = ("registry:write",),
        tenant: str = "system",
        ttl_s: float = 365 * 86400.0,
    ) -> str:
        return self._sign(
            {
                "sub": f"{SERVICE_PREFIX}{name}",
                "tid": tenant,
                "aud": MESH_AUDIENCE,
                "scope": _scope_text(scopes),
            },
            ttl_s,
        )

    def tool_token(
        self,
        *,
        tool: str,
        principal: Principal,
        scopes: Iterable[str],
        actor: str,
        task_id: str | None = None,
        step: int | None = None,
        approval: Approval | None = None,
        ttl_s: float = MAX_TOOL_TOKEN_TTL_S,
    ) -> str:
        """A token good for one tool only: `aud` = its name, at most 5 minutes."""
        claims: dict[str, Any] = {
            "sub": principal.subject,
            "tid": principal.tenant,
            "aud": tool,
            "scope": _scope_text(scopes),
            "act": {"sub": f"{AGENT_PREFIX}{actor}"},
        }
        if task_id is not None:
            claims["task"] = task_id
        if step is not None:
            claims["step"] = step
        if approval is not None:
            claims["approval"] = approval.claim()
        return self._sign(claims, min(ttl_s, MAX_TOOL_TOKEN_TTL_S))

    def delegation_token(
        self,
        *,
        domain: str,
        principal: Principal,
        scopes: Iterable[str],
        actor: str,
        ttl_s: float = MAX_TOOL_TOKEN_TTL_S,
    ) -> str:
        """A token for another agent: `aud` = its domain, `act` = the calling agent, depth + 1."""
        return self._sign(
            {
                "sub": principal.subject,
                "tid": principal.tenant,
                "aud": domain,
                "scope": _scope_text(scopes),
                "act": {"sub": f"{AGENT_PREFIX}{actor}"},
                "depth": principal.depth + 1,
            },
            min(ttl_s, MAX_TOOL_TOKEN_TTL_S),
        )


def _refuse(message: str, *, why: str) -> Unauthenticated:
    # Never echo the token; `why` is a short machine-readable cause in ErrorInfo metadata.
    return Unauthenticated(message, metadata={"cause": why})


class TokenVerifier:
    """Verifies bearer tokens against trusted keys, issuers and audiences."""

    def __init__(
        self,
        keys: TrustedKeys,
        *,
        issuers: Collection[str] = (MESH_ISSUER,),
        mesh_issuer: str = MESH_ISSUER,
        leeway_s: float = DEFAULT_LEEWAY_S,
        cache_size: int = 10_000,
    ) -> None:
        self.keys = keys
        self.issuers = frozenset(issuers) | {mesh_issuer}
        self.mesh_issuer = mesh_issuer
        self.leeway_s = leeway_s
        self._cache: OrderedDict[tuple[str, frozenset[str]], Principal] = OrderedDict()
        self._cache_size = cache_size

    async def verify(self, token: str, *, audiences: Collection[str]) -> Principal:
        """The principal of a valid token for one of `audiences`, else Unauthenticated."""
        accepted = frozenset(audiences)
        cache_key = (token, accepted)
        cached = self._cache.get(cache_key)
        now = time.time()
        if cached is not None:
            if cached.expires_at + self.leeway_s > now:
                self._cache.move_to_end(cache_key)
                return cached
            del self._cache[cache_key]
        if len(token) > MAX_TOKEN_BYTES:
            raise _refuse(f"the token is larger than {MAX_TOKEN_BYTES} bytes", why="oversized")
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError:
            raise _refuse("the bearer token is not a JWT", why="malformed") from None
        kid, algorithm = header.get("kid"), header.get("alg")
        if not isinstance(kid, str) or not kid:
            raise _refuse("the token names no signing key (kid)", why="no_kid")
        key = await self.keys.fetch_for(kid)
        if key is None:
            raise _refuse("the token is signed by an unknown key", why="unknown_kid")
        if algorithm not in key.algorithms:
            raise _refuse(f"the token's algorithm {str(algorithm)[:16]!r} is not allowed", why="algorithm")
        principal = self._decode(token, key.key.key, algorithm, accepted)
        if principal.approval is not None or principal.step is not None:
            return principal  # bound to one task step: presented once, caching it only holds memory
        self._cache[cache_key] = principal
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str, key: Any, algorithm: str, audiences: frozenset[str]) -> Principal:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=list(audiences),
                leeway=self.leeway_s,
                options={"require": ["exp", "iat", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _refuse("the token has expired", why="expired") from None
        except jwt.ImmatureSignatureError:
            raise _refuse("the token is not valid yet (nbf/iat in the future)", why="not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise _refuse(
                f"the token is not for this service (audience must be one of {', '.join(sorted(audiences))})",
                why="audience",
            ) from None
        except jwt.InvalidSignatureError:
            raise _refuse("the token's signature does not verify", why="signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _refuse(f"the token lacks the {exc.claim!r} claim", why="claims") from None
        except InvalidTokenError:
            raise _refuse("the bearer token is not valid", why="invalid") from None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        issuer = claims.get("iss")
        if issuer not in self.issuers:
            raise _refuse("the token's issuer is not trusted", why="issuer")
        subject, tenant = claims.get("sub"), claims.get("tid", "default")
        if not isinstance(subject, str) or not subject or len(subject) > 256:
            raise _refuse("the token's subject is missing or too long", why="claims")
        if not isinstance(tenant, str) or not OPAQUE_ID.fullmatch(tenant):
            raise _refuse("the token's tenant (tid) is missing or malformed", why="claims")
        act = claims.get("act")
        actor = act.get("sub") if isinstance(act, dict) and isinstance(act.get("sub"), str) else None
        depth = claims.get("depth", 0)
        if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= MAX_DEPTH:
            raise _refuse("the token's delegation depth is malformed", why="claims")
        audience = claims["aud"]
        step = claims.get("step")
        task = claims.get("task")
        return Principal(
            subject=subject,
            tenant=tenant,
            scopes=parse_scopes(claims.get("scope", claims.get("scp"))),
            issuer=issuer,
            audience=tuple(audience) if isinstance(audience, list) else (str(audience),),
            token_id=str(claims.get("jti", "")),
            expires_at=float(claims["exp"]),
            actor=actor,
            depth=depth,
            approval=Approval.from_claim(claims.get("approval")),
            task_id=task if isinstance(task, str) else None,
            step=step if isinstance(step, int) and not isinstance(step, bool) else None,
        )


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer …` entry, if any (None when absent)."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _refuse("the authorization metadata must be 'Bearer <token>'", why="malformed")
            return token.strip()
    return None

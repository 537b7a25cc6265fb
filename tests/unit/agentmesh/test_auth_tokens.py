"""The mesh's token check (agentmesh.kit.auth): every bad token of the security issue's list is
UNAUTHENTICATED with its cause, the good ones give the claims' principal, scopes are enforced per
method. Real keys, real JWTs (PyJWT), no network."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from agentmesh.kit import metadata as md
from agentmesh.kit.auth import (
    MESH_AUDIENCE,
    Approval,
    Authenticator,
    IssuerKey,
    MethodRule,
    TokenIssuer,
    TokenVerifier,
    TrustedKeys,
    arguments_digest,
    generate_issuer_key,
    jwks_document,
    mesh_auth,
)
from agentmesh.kit.auth.gate import dev_principal
from agentmesh.kit.auth.tokens import MAX_TOKEN_BYTES
from agentmesh.kit.config import ConfigError
from agentmesh.kit.errors import PermissionDenied, Unauthenticated
from agentmesh.kit.testing import local_settings
from agentmesh.v1 import agent_service_pb2

KEY = generate_issuer_key()
OTHER = generate_issuer_key()
ISSUER = TokenIssuer([KEY])


def verifier(*, jwks: str | None = None) -> TokenVerifier:
    return TokenVerifier(TrustedKeys(issuer_keys=[KEY], jwks=jwks))


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "agentmesh",
        "aud": "agentmesh",
        "sub": "alice",
        "tid": "acme",
        "scope": "refunds:approve payments:refund",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, object], key: IssuerKey = KEY, kid: str | None = None) -> str:
    return jwt.encode(payload, key.private_key, algorithm=key.algorithm, headers={"kid": kid or key.kid})


async def cause_of(
    token: str, *, audiences: tuple[str, ...] = (MESH_AUDIENCE,), check: TokenVerifier | None = None
) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await (check or verifier()).verify(token, audiences=audiences)
    assert token not in caught.value.message  # a refusal never echoes the token
    return caught.value.metadata["cause"]


async def test_a_user_token_gives_its_claims() -> None:
    token = ISSUER.user_token(user="alice", tenant="acme", scopes=("refunds:approve", "a:b"))
    principal = await verifier().verify(token, audiences=("refunds", MESH_AUDIENCE))
    assert (principal.subject, principal.tenant) == ("alice", "acme")
    assert principal.scopes == frozenset({"refunds:approve", "a:b"})
    assert principal.actor is None and principal.depth == 0 and principal.authenticated


@pytest.mark.parametrize(
    ("token", "cause"),
    [
        ("not-a-jwt", "malformed"),
        (signed(claims(exp=int(time.time()) - 120)), "expired"),
        (signed(claims(nbf=int(time.time()) + 600, iat=int(time.time()) + 600)), "not_yet_valid"),
        (signed(claims(aud="fulfillment")), "audience"),
        (signed(claims(iss="https://evil.example")), "issuer"),
        (signed(claims(), key=OTHER), "unknown_kid"),
        (signed(claims(), key=OTHER, kid=KEY.kid), "signature"),
        (signed(claims(tid="no spaces allowed")), "claims"),
        (signed(claims(sub=None)), "claims"),
        (signed(claims(depth=99)), "claims"),
        (b64({"alg": "EdDSA"}) + "." + b64(claims()) + ".sig", "no_kid"),
    ],
    ids=[
        "malformed",
        "expired",
        "not-yet-valid",
        "wrong-audience",
        "wrong-issuer",
        "unknown-kid",
        "wrongly-signed",
        "bad-tenant",
        "no-subject",
        "depth-beyond-cap",
        "no-kid",
    ],
)
async def test_bad_tokens_are_unauthenticated_with_their_cause(token: str, cause: str) -> None:
    assert await cause_of(token) == cause


async def test_alg_none_is_refused() -> None:
    token = b64({"alg": "none", "kid": KEY.kid, "typ": "JWT"}) + "." + b64(claims()) + "."
    assert await cause_of(token) == "algorithm"


async def test_hs256_signed_with_the_public_key_is_refused() -> None:
    # The classic confusion: an HMAC whose secret is the verifier's public key.
    public_pem = KEY.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64({"alg": "HS256", "kid": KEY.kid, "typ": "JWT"})
    body = b64(claims())
    import hashlib
    import hmac

    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert await cause_of(token) == "algorithm"


async def test_an_oversized_token_is_refused_before_parsing() -> None:
    assert await cause_of("a" * (MAX_TOKEN_BYTES + 1)) == "oversized"


async def test_a_token_from_a_jwks_file_verifies_and_a_rotated_key_is_picked_up(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_document([OTHER])))
    check = verifier(jwks=str(jwks))
    assert (await check.verify(signed(claims(), key=OTHER), audiences=("agentmesh",))).subject == "alice"
    newer = generate_issuer_key("ES256")
    jwks.write_text(json.dumps(jwks_document([OTHER, newer])) + " ")  # size changes: re-read
    await asyncio.sleep(1.1)  # the file is re-checked at most once a second
    assert (
        await check.verify(signed(claims(jti="j2"), key=newer), audiences=("agentmesh",))
    ).tenant == "acme"


async def test_a_delegation_token_carries_actor_and_depth() -> None:
    user = await verifier().verify(ISSUER.user_token(user="u", tenant="t"), audiences=("agentmesh",))
    token = ISSUER.delegation_token(domain="fulfillment", principal=user, scopes=("x:y",), actor="refunds")
    principal = await verifier().verify(token, audiences=("fulfillment",))
    assert principal.actor == "agent:refunds" and principal.depth == 1 and principal.scopes == {"x:y"}
    assert await cause_of(token, audiences=("refunds",)) == "audience"


async def test_a_tool_token_is_for_one_tool_and_carries_the_approval() -> None:
    user = await verifier().verify(ISSUER.user_token(user="u", tenant="t"), audiences=("agentmesh",))
    digest = arguments_digest(agent_service_pb2.GetTaskRequest(task_id="x"))
    approval = Approval("act-1", "task-1", 3, digest, "bob")
    token = ISSUER.tool_token(
        tool="payments_refund",
        principal=user,
        scopes=("payments:refund",),
        actor="refunds",
        approval=approval,
    )
    principal = await verifier().verify(token, audiences=("payments_refund",))
    assert principal.approval == approval and principal.expires_at - time.time() <= 300
    assert await cause_of(token, audiences=("payments_charge",)) == "audience"


async def test_the_gate_asks_for_a_token_and_names_a_missing_scope() -> None:
    gate = Authenticator(
        verifier(),
        audiences=("refunds", MESH_AUDIENCE),
        rules={"agentmesh.v1.AgentService/ResumeTask": MethodRule(scopes=("refunds:approve",))},
    )
    with pytest.raises(Unauthenticated) as missing:
        await gate.authenticate("/agentmesh.v1.AgentService/GetTask", [])
    assert missing.value.metadata["cause"] == "missing"
    with pytest.raises(Unauthenticated):
        await gate.authenticate("/agentmesh.v1.AgentService/GetTask", [(md.AUTHORIZATION, "Basic abc")])
    plain = ISSUER.user_token(user="u", tenant="t", scopes=("refunds:use",))
    with pytest.raises(PermissionDenied) as denied:
        await gate.authenticate(
            "/agentmesh.v1.AgentService/ResumeTask", [(md.AUTHORIZATION, f"Bearer {plain}")]
        )
    assert denied.value.metadata["scope"] == "refunds:approve"
    assert await gate.authenticate("/grpc.health.v1.Health/Check", []) is None
    # Headers are not identity when auth is on.
    principal = await gate.authenticate(
        "/agentmesh.v1.AgentService/GetTask", [(md.AUTHORIZATION, f"Bearer {plain}"), (md.USER, "mallory")]
    )
    assert principal is not None and principal.subject == "u"


def test_insecure_mode_reads_headers_and_is_never_authenticated() -> None:
    principal = dev_principal([(md.TENANT, "acme"), (md.USER, "alice"), ("x-agentmesh-scopes", "a:b")])
    assert (principal.tenant, principal.subject, principal.scopes) == ("acme", "alice", frozenset({"a:b"}))
    assert not principal.authenticated


def test_auth_on_without_a_key_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AGENTMESH_JWKS"):
        mesh_auth(local_settings(insecure_no_auth=False))
    with pytest.raises(ConfigError, match="AGENTMESH_SIGNING_KEY"):
        mesh_auth(local_settings(jwks=str(_jwks_file(tmp_path)), insecure_no_auth=False), need_issuer=True)
    assert mesh_auth(local_settings(insecure_no_auth=True), need_issuer=True).insecure


def auth(token: str) -> list[tuple[str, str]]:
    return [(md.AUTHORIZATION, f"Bearer {token}")]


def _jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_document([KEY])))
    return path

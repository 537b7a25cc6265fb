"""Token verification refuses every bad token of the security issue, with a clear cause."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from agentmesh.kit.auth import (
    Approval,
    Authenticator,
    MethodRule,
    TokenIssuer,
    TokenVerifier,
    TrustedKeys,
    generate_issuer_key,
    jwks_document,
    load_issuer_keys,
)
from agentmesh.kit.auth.gate import mesh_auth
from agentmesh.kit.auth.tokens import MAX_TOKEN_BYTES
from agentmesh.kit.config import ConfigError, Settings
from agentmesh.kit.errors import PermissionDenied, Unauthenticated

KEY = generate_issuer_key()
ISSUER = TokenIssuer([KEY])
VERIFIER = TokenVerifier(TrustedKeys(issuer_keys=[KEY]))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _cause(token: str, audiences: tuple[str, ...] = ("agentmesh",)) -> str:
    with pytest.raises(Unauthenticated) as info:
        await VERIFIER.verify(token, audiences=audiences)
    return info.value.metadata["cause"]


async def test_a_user_token_verifies_into_its_claims() -> None:
    token = ISSUER.user_token(user="alice", tenant="acme", scopes=["refunds:approve", "payments:refund"])
    principal = await VERIFIER.verify(token, audiences=["agentmesh"])
    assert (principal.subject, principal.tenant) == ("alice", "acme")
    assert principal.scopes == {"refunds:approve", "payments:refund"}
    assert principal.actor is None and principal.depth == 0 and not principal.is_service


async def test_tool_and_delegation_tokens_carry_their_claims() -> None:
    user = await VERIFIER.verify(ISSUER.user_token(user="bob", tenant="t1"), audiences=["agentmesh"])
    approval = Approval("act-1", "task-1", 3, "ab" * 32, "carol")
    tool = await VERIFIER.verify(
        ISSUER.tool_token(
            tool="payments_refund",
            principal=user,
            scopes=["payments:refund"],
            actor="refunds",
            task_id="task-1",
            step=3,
            approval=approval,
        ),
        audiences=["payments_refund"],
    )
    assert (
        tool.actor == "agent:refunds"
        and tool.approval == approval
        and (tool.task_id, tool.step) == ("task-1", 3)
    )
    assert tool.expires_at - time.time() <= 300
    hop = await VERIFIER.verify(
        ISSUER.delegation_token(domain="fulfillment", principal=user, scopes=[], actor="refunds"),
        audiences=["fulfillment"],
    )
    assert hop.depth == 1 and hop.actor == "agent:refunds" and hop.subject == "bob"


async def test_a_token_for_another_audience_is_refused() -> None:
    token = ISSUER.tool_token(
        tool="payments_refund",
        principal=await VERIFIER.verify(ISSUER.user_token(user="u", tenant="t"), audiences=["agentmesh"]),
        scopes=[],
        actor="refunds",
    )
    assert await _cause(token, audiences=("email_send",)) == "audience"


async def test_expired_and_not_yet_valid_tokens_are_refused() -> None:
    now = int(time.time())
    expired = jwt.encode(
        {"iss": "agentmesh", "sub": "u", "tid": "t", "aud": "agentmesh", "iat": now - 600, "exp": now - 120},
        KEY.private_key,
        algorithm="EdDSA",
        headers={"kid": KEY.kid},
    )
    assert await _cause(expired) == "expired"
    future = jwt.encode(
        {
            "iss": "agentmesh",
            "sub": "u",
            "tid": "t",
            "aud": "agentmesh",
            "iat": now,
            "nbf": now + 600,
            "exp": now + 900,
        },
        KEY.private_key,
        algorithm="EdDSA",
        headers={"kid": KEY.kid},
    )
    assert await _cause(future) == "not_yet_valid"


async def test_a_token_signed_by_another_key_with_our_kid_is_refused() -> None:
    other = generate_issuer_key()
    forged = jwt.encode(
        {
            "iss": "agentmesh",
            "sub": "u",
            "tid": "t",
            "aud": "agentmesh",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        other.private_key,
        algorithm="EdDSA",
        headers={"kid": KEY.kid},
    )
    assert await _cause(forged) == "signature"


async def test_unknown_kid_wrong_issuer_and_missing_claims_are_refused() -> None:
    other = generate_issuer_key()
    assert await _cause(TokenIssuer([other]).user_token(user="u", tenant="t")) == "unknown_kid"
    assert (
        await _cause(TokenIssuer([KEY], issuer="https://evil.example").user_token(user="u", tenant="t"))
        == "issuer"
    )
    no_sub = jwt.encode(
        {
            "iss": "agentmesh",
            "tid": "t",
            "aud": "agentmesh",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        KEY.private_key,
        algorithm="EdDSA",
        headers={"kid": KEY.kid},
    )
    assert await _cause(no_sub) == "claims"


async def test_alg_none_and_hs256_with_the_public_key_are_refused() -> None:
    claims = {
        "iss": "agentmesh",
        "sub": "u",
        "tid": "t",
        "aud": "agentmesh",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
    }
    unsigned = (
        _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": KEY.kid}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
        + "."
    )
    assert await _cause(unsigned) == "algorithm"
    public_pem = KEY.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KEY.kid}).encode())
    body = _b64(json.dumps(claims).encode())
    import hashlib
    import hmac

    signature = _b64(hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest())
    assert await _cause(f"{header}.{body}.{signature}") == "algorithm"


async def test_malformed_and_oversized_tokens_are_refused() -> None:
    assert await _cause("not-a-jwt") == "malformed"
    assert await _cause("x" * (MAX_TOKEN_BYTES + 1)) == "oversized"


async def test_the_gate_needs_a_bearer_token_and_the_method_scopes() -> None:
    gate = Authenticator(
        VERIFIER, audiences=["agentmesh"], rules={"pkg.Svc/Write": MethodRule(scopes=("registry:write",))}
    )
    assert await gate.authenticate("/grpc.health.v1.Health/Check", []) is None
    with pytest.raises(Unauthenticated) as missing:
        await gate.authenticate("/pkg.Svc/Read", [])
    assert missing.value.metadata["cause"] == "missing"
    with pytest.raises(Unauthenticated):
        await gate.authenticate("/pkg.Svc/Read", [("authorization", "Basic dXNlcjpwdw==")])
    reader = ISSUER.user_token(user="u", tenant="t")
    assert (await gate.authenticate("/pkg.Svc/Read", [("authorization", f"Bearer {reader}")])).subject == "u"
    with pytest.raises(PermissionDenied) as denied:
        await gate.authenticate("/pkg.Svc/Write", [("authorization", f"Bearer {reader}")])
    assert denied.value.metadata == {"scope": "registry:write"}
    writer = ISSUER.service_token("payments")
    principal = await gate.authenticate("/pkg.Svc/Write", [("authorization", f"Bearer {writer}")])
    assert principal is not None and principal.service_name == "payments"


async def test_headers_are_identity_only_in_insecure_mode() -> None:
    secure = Authenticator(VERIFIER, audiences=["agentmesh"])
    with pytest.raises(Unauthenticated):
        await secure.authenticate("/pkg.Svc/Read", [("x-agentmesh-user", "alice")])
    insecure = Authenticator(None, audiences=["agentmesh"], insecure=True)
    principal = await insecure.authenticate("/pkg.Svc/Read", [("x-agentmesh-user", "alice")])
    assert principal is not None and principal.subject == "alice" and not principal.authenticated


def test_auth_is_on_unless_turned_off_and_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AGENTMESH_JWKS"):
        mesh_auth(Settings())
    key_file = tmp_path / "issuer.pem"
    key_file.write_bytes(KEY.pem() + generate_issuer_key("ES256").pem())
    keys = load_issuer_keys(key_file)
    assert keys[0].kid == KEY.kid and keys[1].algorithm == "ES256"
    auth = mesh_auth(Settings(signing_key=key_file))
    assert auth.issuer is not None and not auth.insecure
    assert {k["kid"] for k in jwks_document(keys)["keys"]} == {k.kid for k in keys}
    assert mesh_auth(Settings(insecure_no_auth=True)).insecure


async def test_a_jwks_file_is_trusted_and_reread_when_it_changes(tmp_path: Path) -> None:
    idp = generate_issuer_key("ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_document([idp])))
    verifier = TokenVerifier(TrustedKeys(jwks=str(jwks)), issuers=["https://idp.example"])
    token = TokenIssuer([idp], issuer="https://idp.example").user_token(user="u", tenant="t")
    assert (await verifier.verify(token, audiences=["agentmesh"])).issuer == "https://idp.example"
    rotated = generate_issuer_key()
    jwks.write_text(json.dumps(jwks_document([idp, rotated])) + " ")
    verifier.keys._attempted_at = 0.0  # the file is re-checked at most once a second
    fresh = TokenIssuer([rotated], issuer="https://idp.example").user_token(user="u", tenant="t")
    assert (await verifier.verify(fresh, audiences=["agentmesh"])).subject == "u"


async def test_reused_tokens_are_cached_but_tokens_bound_to_one_step_are_not() -> None:
    # A tool token for one task step is presented once: caching it would only hold memory
    # (a tool's verifier filled up with 10,000 of them in a soak).
    verifier = TokenVerifier(TrustedKeys(issuer_keys=[KEY]))
    user = await verifier.verify(ISSUER.user_token(user="dan", tenant="t1"), audiences=["agentmesh"])
    reused = ISSUER.tool_token(tool="crm_get", principal=user, scopes=[], actor="support")
    first = await verifier.verify(reused, audiences=["crm_get"])
    assert await verifier.verify(reused, audiences=["crm_get"]) is first
    bound = ISSUER.tool_token(
        tool="crm_get", principal=user, scopes=[], actor="support", task_id="task-9", step=2
    )
    once = await verifier.verify(bound, audiences=["crm_get"])
    again = await verifier.verify(bound, audiences=["crm_get"])
    assert again is not once and (again.task_id, again.step) == ("task-9", 2)

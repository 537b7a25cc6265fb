"""Each check of the auth code, one by one (written against the survivors of `make mutate`,
tests/MUTATION.md): the claims a verified token must carry and their bounds, the bearer header,
the insecure-mode identity headers, the scope refusal, what `mesh_auth` builds from the settings,
and a remote JWKS (served over HTTP on localhost)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from agentmesh.kit.auth import (
    Authenticator,
    Principal,
    TokenIssuer,
    TokenVerifier,
    TrustedKeys,
    generate_issuer_key,
    jwks_document,
    require_scopes,
)
from agentmesh.kit.auth.gate import dev_principal, mesh_auth
from agentmesh.kit.auth.tokens import MAX_DEPTH, bearer_token
from agentmesh.kit.auth.trust import MAX_JWKS_BYTES, JwksError
from agentmesh.kit.config import ConfigError, Settings
from agentmesh.kit.errors import InvalidArgument, PermissionDenied, Unauthenticated

KEY = generate_issuer_key()
VERIFIER = TokenVerifier(TrustedKeys(issuer_keys=[KEY]))


def _token(key: Any = KEY, **claims: Any) -> str:
    """A token signed by `key` with valid base claims; a claim given as None is left out."""
    now = int(time.time())
    payload = {"iss": "agentmesh", "sub": "u", "tid": "t", "aud": "agentmesh", "iat": now, "exp": now + 300}
    payload.update(claims)
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None},
        key.private_key,
        algorithm=key.algorithm,
        headers={"kid": key.kid},
    )


async def _refused(token: str, verifier: TokenVerifier = VERIFIER) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(token, audiences=["agentmesh"])
    return info.value


# -- the claims of a token --------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "sub", "aud"])
async def test_every_required_claim_is_required(claim: str) -> None:
    refused = await _refused(_token(**{claim: None}))
    assert refused.metadata["cause"] == "claims" and f"lacks the {claim!r} claim" in refused.message


async def test_a_clock_skew_within_the_leeway_is_tolerated_beyond_it_not() -> None:
    now = int(time.time())
    skewed = _token(iat=now - 600, exp=now - 5)  # expired 5 s ago: within the 30 s leeway
    assert (await VERIFIER.verify(skewed, audiences=["agentmesh"])).subject == "u"
    strict = TokenVerifier(TrustedKeys(issuer_keys=[KEY]), leeway_s=0)
    refused = await _refused(skewed, strict)
    assert refused.metadata["cause"] == "expired" and refused.message == "the token has expired"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"iss": "https://evil.example"}, "the token's issuer is not trusted"),
        ({"sub": ""}, "the token's subject is missing or too long"),
        ({"sub": "x" * 257}, "the token's subject is missing or too long"),
        ({"tid": "not a tenant!"}, "the token's tenant (tid) is missing or malformed"),
        ({"tid": 7}, "the token's tenant (tid) is missing or malformed"),
        ({"depth": MAX_DEPTH + 1}, "the token's delegation depth is malformed"),
        ({"depth": -1}, "the token's delegation depth is malformed"),
        ({"depth": True}, "the token's delegation depth is malformed"),
        ({"depth": "1"}, "the token's delegation depth is malformed"),
    ],
)
async def test_claims_out_of_bounds_are_refused_with_their_reason(
    claims: dict[str, Any], message: str
) -> None:
    refused = await _refused(_token(**claims))
    assert refused.message == message
    assert refused.metadata["cause"] == ("issuer" if "iss" in claims else "claims")


async def test_claims_at_their_bounds_are_accepted() -> None:
    longest = await VERIFIER.verify(_token(sub="x" * 256, depth=MAX_DEPTH), audiences=["agentmesh"])
    assert len(longest.subject) == 256 and longest.depth == MAX_DEPTH
    no_tenant = await VERIFIER.verify(_token(tid=None), audiences=["agentmesh"])
    assert no_tenant.tenant == "default"


async def test_the_claims_are_read_into_the_principal() -> None:
    principal = await VERIFIER.verify(
        _token(aud=["agentmesh", "email_send"], jti="token-1", scope=None, scp=["a:read", "b:write"]),
        audiences=["agentmesh"],
    )
    assert principal.audience == ("agentmesh", "email_send")
    assert principal.token_id == "token-1"
    assert principal.scopes == {"a:read", "b:write"}  # an IdP's `scp` list
    plain = await VERIFIER.verify(_token(scope=None, scp="c:read d:write"), audiences=["agentmesh"])
    assert plain.scopes == {"c:read", "d:write"} and plain.token_id == "" and plain.audience == ("agentmesh",)
    assert (await VERIFIER.verify(_token(scope=["e:read"]), audiences=["agentmesh"])).scopes == {"e:read"}
    assert (await VERIFIER.verify(_token(scope=7), audiences=["agentmesh"])).scopes == frozenset()


@pytest.mark.parametrize(("task", "step"), [(7, "2"), (["t"], True), (None, 2.5)])
async def test_a_task_or_step_claim_of_the_wrong_type_binds_nothing(task: Any, step: Any) -> None:
    principal = await VERIFIER.verify(_token(task=task, step=step), audiences=["agentmesh"])
    assert principal.task_id is None and principal.step is None


async def test_an_approval_claim_reads_its_approver_or_none() -> None:
    claim = {"action": "a1", "task": "t1", "step": 2, "args": "ab" * 32}
    principal = await VERIFIER.verify(_token(approval=claim, task="t1", step=2), audiences=["agentmesh"])
    assert principal.approval is not None and principal.approval.approver == ""
    signed = await VERIFIER.verify(
        _token(approval={**claim, "by": "carol"}, task="t1", step=2), audiences=["agentmesh"]
    )
    assert signed.approval is not None and signed.approval.approver == "carol"


async def test_issued_tokens_carry_the_tenant_and_scopes_they_were_minted_with() -> None:
    issuer = TokenIssuer([KEY])
    service = await VERIFIER.verify(issuer.service_token("payments"), audiences=["agentmesh"])
    assert (service.subject, service.tenant, service.scopes) == (
        "service:payments",
        "system",
        {"registry:write"},
    )
    user = Principal(subject="bob", tenant="acme", depth=2)
    hop = await VERIFIER.verify(
        issuer.delegation_token(
            domain="fulfillment", principal=user, scopes=["orders:read"], actor="refunds"
        ),
        audiences=["fulfillment"],
    )
    assert (hop.tenant, hop.scopes, hop.depth) == ("acme", {"orders:read"}, 3)


# -- the bearer header and the gate -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc", "abc"),
        (b"Bearer abc", "abc"),  # binary metadata
        ("bearer  abc  ", "abc"),  # scheme case, extra spaces
    ],
)
def test_a_bearer_header_yields_its_token(value: str | bytes, token: str) -> None:
    assert bearer_token([("x-other", "1"), ("Authorization", value)]) == token


@pytest.mark.parametrize("value", ["Basic dXNlcjpwdw==", "Bearer", "Bearer    ", "abc"])
def test_a_malformed_authorization_header_is_refused(value: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        bearer_token([("authorization", value)])
    assert info.value.metadata["cause"] == "malformed"
    assert info.value.message == "the authorization metadata must be 'Bearer <token>'"


def test_no_authorization_header_is_no_token() -> None:
    assert bearer_token([("x-agentmesh-user", "alice")]) is None and bearer_token(None) is None


async def test_a_missing_token_and_a_missing_scope_say_what_is_needed() -> None:
    gate = Authenticator(VERIFIER, audiences=["agentmesh"])
    with pytest.raises(Unauthenticated) as missing:
        await gate.authenticate("/pkg.Svc/Read", None)
    assert missing.value.message == "this call needs 'authorization: Bearer <token>' metadata"
    with pytest.raises(PermissionDenied) as denied:
        require_scopes(Principal(subject="u", tenant="t", scopes=frozenset({"a"})), ["a", "b", "c"])
    assert denied.value.reason == "MISSING_SCOPE" and denied.value.message == "this call needs the 'b' scope"
    with pytest.raises(ValueError, match="an Authenticator without a verifier must be insecure"):
        Authenticator(None, audiences=["agentmesh"])


# -- insecure mode: the caller names itself ---------------------------------------------------


def test_insecure_identity_headers_are_read_and_defaulted() -> None:
    named = dev_principal(
        [
            ("X-Agentmesh-Tenant", " acme "),
            ("x-agentmesh-user", "alice"),
            ("x-agentmesh-scopes", "a:read  b:write"),
            ("x-agentmesh-delegation-depth", "64"),
            ("x-agentmesh-bin", b"\x00"),
        ]
    )
    assert (named.tenant, named.subject, named.scopes, named.depth) == (
        "acme",
        "alice",
        {"a:read", "b:write"},
        64,
    )
    assert named.authenticated is False
    anonymous = dev_principal([("x-agentmesh-delegation-depth", " ")])
    assert (anonymous.tenant, anonymous.subject, anonymous.scopes, anonymous.depth) == (
        "default",
        "anonymous",
        frozenset(),
        0,
    )


def test_insecure_identity_headers_out_of_bounds_are_invalid_arguments() -> None:
    with pytest.raises(InvalidArgument) as info:
        dev_principal([("x-agentmesh-tenant", "bad tenant"), ("x-agentmesh-delegation-depth", "65")])
    tenant, depth = info.value.violations
    assert info.value.message == "invalid caller metadata: x-agentmesh-tenant, x-agentmesh-delegation-depth"
    assert (tenant.field, tenant.reason) == ("x-agentmesh-tenant", "PATTERN")
    assert tenant.description.startswith("'bad tenant' must match ")
    assert (depth.field, depth.description) == ("x-agentmesh-delegation-depth", "'65' is not a depth (0-64)")
    with pytest.raises(InvalidArgument) as user:
        dev_principal([("x-agentmesh-user", "u" * 300)])
    assert user.value.violations[0].field == "x-agentmesh-user"
    assert user.value.violations[0].description.startswith(repr("u" * 80) + " must match")
    with pytest.raises(InvalidArgument):
        dev_principal([("x-agentmesh-delegation-depth", "one")])


# -- mesh_auth: what a process builds from its settings ----------------------------------------


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "issuer.pem"
    path.write_bytes(KEY.pem())
    return path


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_document([IDP])))
    return path


IDP = generate_issuer_key("ES256")


async def test_mesh_auth_with_a_signing_key_mints_and_verifies(key_file: Path) -> None:
    auth = mesh_auth(Settings(signing_key=key_file, jwt_issuers="https://idp.example"), need_issuer=True)
    assert not auth.insecure and auth.issuer is not None and auth.keys[0].kid == KEY.kid
    assert auth.verifier is not None and auth.verifier.issuers == {"agentmesh", "https://idp.example"}
    token = auth.issuer.user_token(user="u", tenant="t")
    principal = await auth.authenticator(audiences=["agentmesh"]).authenticate(
        "/pkg.Svc/Read", [("authorization", f"Bearer {token}")]
    )
    assert principal is not None and principal.authenticated
    assert [k["kid"] for k in auth.jwks()["keys"]] == [KEY.kid]


async def test_mesh_auth_with_a_jwks_only_verifies_and_cannot_mint(jwks_file: Path) -> None:
    settings = Settings(jwks=str(jwks_file), jwt_issuers="https://idp.example")
    auth = mesh_auth(settings)
    assert auth.issuer is None and auth.keys == [] and not auth.insecure
    token = TokenIssuer([IDP], issuer="https://idp.example").user_token(user="u", tenant="t")
    assert auth.verifier is not None
    assert (await auth.verifier.verify(token, audiences=["agentmesh"])).issuer == "https://idp.example"
    assert [k["kid"] for k in auth.jwks()["keys"]] == [IDP.kid]
    with pytest.raises(ConfigError, match=r"^AGENTMESH_SIGNING_KEY is required: this service mints tokens"):
        mesh_auth(settings, need_issuer=True)
    with pytest.raises(ConfigError, match=r"^cannot read AGENTMESH_JWKS .*missing\.json"):
        mesh_auth(Settings(jwks=str(jwks_file.parent / "missing.json")))


async def test_insecure_mesh_auth_reads_headers_but_still_verifies_and_mints(
    key_file: Path, jwks_file: Path
) -> None:
    auth = mesh_auth(Settings(insecure_no_auth=True, signing_key=key_file), need_issuer=True)
    assert auth.insecure and auth.issuer is not None and auth.keys[0].kid == KEY.kid
    assert auth.verifier is not None  # tokens it mints for tools still verify
    principal = await auth.authenticator(audiences=["agentmesh"]).authenticate(
        "/pkg.Svc/Read", [("x-agentmesh-user", "alice")]
    )
    assert principal is not None and principal.subject == "alice" and not principal.authenticated
    assert [k["kid"] for k in auth.jwks()["keys"]] == [KEY.kid]
    bare = mesh_auth(Settings(insecure_no_auth=True), need_issuer=True)
    assert bare.verifier is None and bare.issuer is None and bare.jwks() == {"keys": []}
    from_jwks = mesh_auth(
        Settings(insecure_no_auth=True, jwks=str(jwks_file), jwt_issuers="https://idp.example")
    )
    token = TokenIssuer([IDP], issuer="https://idp.example").user_token(user="u", tenant="t")
    assert from_jwks.verifier is not None
    assert (await from_jwks.verifier.verify(token, audiences=["agentmesh"])).subject == "u"


def test_auth_on_without_a_key_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError) as info:
        mesh_auth(Settings())
    assert str(info.value) == (
        "authentication is on but no key to verify tokens with: set AGENTMESH_JWKS (a file or URL) "
        "or AGENTMESH_SIGNING_KEY, or AGENTMESH_INSECURE_NO_AUTH=true for local development"
    )


# -- a remote JWKS ------------------------------------------------------------------------------


class _JwksServer:
    """An HTTP server on localhost serving `document` at /jwks.json; counts the fetches."""

    def __init__(self) -> None:
        self.document: Any = jwks_document([IDP])
        self.fetches = 0
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = (
                    outer.document
                    if isinstance(outer.document, bytes)
                    else json.dumps(outer.document).encode()
                )
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def jwks_server() -> Iterator[_JwksServer]:
    server = _JwksServer()
    yield server
    server.close()


def _idp_token(key: Any) -> str:
    return TokenIssuer([key], issuer="https://idp.example").user_token(user="u", tenant="t")


async def test_a_remote_jwks_is_fetched_once_and_again_for_an_unknown_kid(jwks_server: _JwksServer) -> None:
    keys = TrustedKeys(jwks=jwks_server.url, min_refresh_s=0.0)
    assert keys.is_remote and jwks_server.fetches == 1 and keys.kids() == [IDP.kid]
    verifier = TokenVerifier(keys, issuers=["https://idp.example"])
    assert (await verifier.verify(_idp_token(IDP), audiences=["agentmesh"])).subject == "u"
    assert jwks_server.fetches == 1  # a known kid of a fresh JWKS: no fetch
    rotated = generate_issuer_key()
    jwks_server.document = jwks_document([IDP, rotated])
    assert (await verifier.verify(_idp_token(rotated), audiences=["agentmesh"])).subject == "u"
    assert jwks_server.fetches == 2 and keys.kids() == sorted([IDP.kid, rotated.kid])
    assert {k["kid"] for k in keys.document()["keys"]} == {IDP.kid, rotated.kid}


async def test_an_unknown_kid_does_not_make_the_verifier_fetch_in_a_loop(jwks_server: _JwksServer) -> None:
    keys = TrustedKeys(jwks=jwks_server.url)  # at most one fetch every 30 s
    verifier = TokenVerifier(keys, issuers=["https://idp.example"])
    stranger = generate_issuer_key()
    for _ in range(3):
        refused = await _refused(_idp_token(stranger), verifier)
        assert refused.metadata["cause"] == "unknown_kid"
    assert jwks_server.fetches == 1


async def test_a_stale_remote_jwks_is_fetched_again_and_kept_when_the_fetch_fails(
    jwks_server: _JwksServer,
) -> None:
    keys = TrustedKeys(jwks=jwks_server.url, max_age_s=0.0, min_refresh_s=0.0)
    verifier = TokenVerifier(keys, issuers=["https://idp.example"])
    token = _idp_token(IDP)
    await verifier.verify(token, audiences=["agentmesh"])
    assert jwks_server.fetches == 2  # stale at once (max age 0): fetched again
    jwks_server.status = 500
    assert (await keys.fetch_for(IDP.kid)) is not None  # the previous keys are kept
    assert jwks_server.fetches == 3


def test_a_remote_jwks_that_cannot_be_loaded_at_start_is_a_configuration_error(
    jwks_server: _JwksServer,
) -> None:
    jwks_server.document = b"x" * (MAX_JWKS_BYTES + 1)
    with pytest.raises(JwksError, match=f"the JWKS is larger than {MAX_JWKS_BYTES} bytes"):
        TrustedKeys(jwks=jwks_server.url)
    jwks_server.document = {"no": "keys"}
    with pytest.raises(JwksError, match=r"not a JWKS \(an object with a 'keys' list\)"):
        TrustedKeys(jwks=jwks_server.url)
    jwks_server.status = 404
    with pytest.raises(JwksError, match=r"^cannot fetch AGENTMESH_JWKS http://127\.0\.0\.1"):
        TrustedKeys(jwks=jwks_server.url)


# -- what a JWKS may hold -------------------------------------------------------------------------


def _rsa(kid: str, alg: str | None = None) -> tuple[Any, dict[str, Any]]:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = {**RSAAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid}
    if alg:
        jwk["alg"] = alg
    return private, jwk


def _rsa_token(private: Any, kid: str, alg: str) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://idp.example",
        "sub": "u",
        "tid": "t",
        "aud": "agentmesh",
        "iat": now,
        "exp": now + 60,
    }
    return jwt.encode(claims, private, algorithm=alg, headers={"kid": kid})


async def test_a_jwks_keeps_only_the_signing_keys_it_can_check(tmp_path: Path) -> None:
    def public(kid: str | None = None, **extra: Any) -> dict[str, Any]:
        key = generate_issuer_key().public()
        if kid is not None:
            key["kid"] = kid
        return {**key, **extra}

    without_kid = public()
    del without_kid["kid"]
    signer = generate_issuer_key()  # published by mistake with its private member `d`
    raw = signer.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    kept = {**signer.public(), "kid": "kept", "d": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
    kept_too = public("kept-too")
    del kept_too["use"]
    pinned_private, pinned = _rsa("rsa-pinned", alg="RS256")
    any_private, any_alg = _rsa("rsa-any")
    document = {
        "keys": [
            "not a key",
            public("for-encryption", use="enc"),
            without_kid,
            public(""),
            {**public(), "kid": 7},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            public("wrong-alg", alg="ES256"),
            public("broken", x="!!"),
            public("mismatched", d="bm90IHRoZSBwcml2YXRlIGtleSBvZiB4IGF0IGFsbCEhIQ"),
            kept,
            kept_too,
            pinned,
            any_alg,
        ]
    }
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(document))
    keys = TrustedKeys(jwks=str(jwks))
    assert keys.kids() == ["kept", "kept-too", "rsa-any", "rsa-pinned"]
    served = {key["kid"]: key for key in keys.document()["keys"]}
    assert "d" not in served["kept"] and served["kept"]["x"] == kept["x"]  # never served on
    verifier = TokenVerifier(keys, issuers=["https://idp.example"])
    assert (
        await verifier.verify(_rsa_token(pinned_private, "rsa-pinned", "RS256"), audiences=["agentmesh"])
    ).subject
    assert (await _refused(_rsa_token(pinned_private, "rsa-pinned", "PS256"), verifier)).metadata[
        "cause"
    ] == "algorithm"  # the JWKS pins RS256 for this key
    assert (
        await verifier.verify(_rsa_token(any_private, "rsa-any", "PS256"), audiences=["agentmesh"])
    ).subject


@pytest.mark.parametrize("document", [[], {"keys": "not a list"}, {"no": "keys"}])
def test_a_document_that_is_not_a_jwks_is_refused_naming_its_source(tmp_path: Path, document: Any) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(document))
    with pytest.raises(JwksError, match=f"{jwks}: not a JWKS"):
        TrustedKeys(jwks=str(jwks))

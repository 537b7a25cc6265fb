"""Each check of the auth code, one by one (written against the survivors of `make mutate`,
tests/MUTATION.md): the claims a verified token must carry and their bounds, the bearer header,
the insecure-mode identity headers, the scope refusal, what `mesh_auth` builds from the settings,
and a remote JWKS (served over HTTP on localhost)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf import struct_pb2

from agentmesh.kit.auth import (
    Authenticator,
    Principal,
    TokenIssuer,
    TokenVerifier,
    TrustedKeys,
    arguments_digest,
    generate_issuer_key,
    jwks_document,
    require_scopes,
    tokens,
    trust,
)
from agentmesh.kit.auth.gate import dev_principal, mesh_auth
from agentmesh.kit.auth.tokens import MAX_DEPTH, MAX_TOKEN_BYTES, bearer_token
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
    with pytest.raises(ValueError, match=r"^an Authenticator without a verifier must be insecure$"):
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
    with pytest.raises(InvalidArgument) as long_depth:
        dev_principal([("x-agentmesh-delegation-depth", "9" * 30)])
    assert long_depth.value.violations[0].description == f"{'9' * 20!r} is not a depth (0-64)"


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
    assert auth.insecure is False and auth.issuer is not None and auth.keys[0].kid == KEY.kid
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
    with pytest.raises(ConfigError) as no_issuer:
        mesh_auth(settings, need_issuer=True)
    assert str(no_issuer.value) == (
        "AGENTMESH_SIGNING_KEY is required: this service mints tokens (generate one with "
        "`agentmesh keys generate`), or set AGENTMESH_INSECURE_NO_AUTH=true for local development"
    )
    with pytest.raises(ConfigError, match=r"^cannot read AGENTMESH_JWKS .*missing\.json"):
        mesh_auth(Settings(jwks=str(jwks_file.parent / "missing.json")))


async def test_insecure_mesh_auth_reads_headers_but_still_verifies_and_mints(
    key_file: Path, jwks_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agentmesh.kit.auth.gate"):
        auth = mesh_auth(Settings(insecure_no_auth=True, signing_key=key_file), need_issuer=True)
    assert [r.getMessage() for r in caplog.records if r.name == "agentmesh.kit.auth.gate"] == [
        "AUTHENTICATION IS OFF (AGENTMESH_INSECURE_NO_AUTH): callers name themselves in headers; "
        "never run like this outside local development"
    ]
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
        self.accept: str | None = None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                outer.accept = self.headers.get("accept")
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
    assert jwks_server.accept == "application/json"
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


async def test_a_jwks_keeps_only_the_signing_keys_it_can_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
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
    _, stray_curve = _rsa("rsa-crv")
    stray_curve["crv"] = "P-256"  # an RSA key is known by its type alone
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
            stray_curve,
        ]
    }
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(document))
    with caplog.at_level(logging.WARNING, logger="agentmesh.kit.auth.trust"):
        keys = TrustedKeys(jwks=str(jwks))
    assert keys.kids() == ["kept", "kept-too", "rsa-any", "rsa-crv", "rsa-pinned"]
    unsupported = ("ignoring a JWKS key without kid or of an unsupported type", str(jwks))
    assert [
        (r.getMessage(), getattr(r, "source", None)) for r in caplog.records if r.name == trust.__name__
    ] == [
        unsupported,  # no kid
        unsupported,  # an empty kid
        unsupported,  # a kid that is not a string
        unsupported,  # an HMAC secret
        ("ignoring JWKS key wrong-alg: alg ES256 does not fit its key type", None),
        ("ignoring JWKS key broken: Invalid key parameter", None),
        ("ignoring JWKS key mismatched: Invalid key parameter", None),
    ]
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


# -- every refusal names its cause ----------------------------------------------------------------


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def b64(part: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(claims)}.c2ln"


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "agentmesh",
        "sub": "u",
        "tid": "t",
        "aud": "agentmesh",
        "iat": now,
        "exp": now + 300,
        **extra,
    }


@pytest.mark.parametrize(
    ("token", "cause", "message"),
    [
        ("x" * (MAX_TOKEN_BYTES + 1), "oversized", f"the token is larger than {MAX_TOKEN_BYTES} bytes"),
        ("x" * MAX_TOKEN_BYTES, "malformed", "the bearer token is not a JWT"),  # at the bound: parsed
        (_unsigned({"alg": "EdDSA"}, _claims()), "no_kid", "the token names no signing key (kid)"),
        (_unsigned({"alg": "EdDSA", "kid": ""}, _claims()), "no_kid", "the token names no signing key (kid)"),
        (_unsigned({"alg": "EdDSA", "kid": 7}, _claims()), "malformed", "the bearer token is not a JWT"),
        (_token(generate_issuer_key()), "unknown_kid", "the token is signed by an unknown key"),
        (
            _unsigned({"alg": "none-" + "x" * 30, "kid": KEY.kid}, _claims()),
            "algorithm",
            "the token's algorithm 'none-xxxxxxxxxxx' is not allowed",  # the echo is cut at 16
        ),
        (
            _token(nbf=int(time.time()) + 600),
            "not_yet_valid",
            "the token is not valid yet (nbf/iat in the future)",
        ),
        (
            _unsigned({"alg": KEY.algorithm, "kid": KEY.kid}, _claims()),
            "signature",
            "the token's signature does not verify",
        ),
        (_token(iat="soon"), "invalid", "the bearer token is not valid"),
    ],
)
async def test_every_refusal_says_its_cause(token: str, cause: str, message: str) -> None:
    refused = await _refused(token)
    assert (refused.metadata["cause"], refused.message) == (cause, message)


async def test_a_token_for_another_service_names_the_audiences_it_needs() -> None:
    with pytest.raises(Unauthenticated) as info:
        await VERIFIER.verify(_token(), audiences=["payments_refund", "crm_get"])
    assert info.value.metadata["cause"] == "audience"
    assert info.value.message == (
        "the token is not for this service (audience must be one of crm_get, payments_refund)"
    )


# -- the result cache -----------------------------------------------------------------------------


class _Clock:
    """Stands in for the `time` module of one auth module: the test moves `now`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


async def test_a_result_is_cached_exactly_as_long_as_the_token_verifies_with_the_leeway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # jwt.decode refuses a token once `now >= exp + leeway`; the cache must not answer longer.
    verifier = TokenVerifier(TrustedKeys(issuer_keys=[KEY]), leeway_s=30)
    exp = int(time.time()) + 300
    token = _token(exp=exp)
    clock = _Clock(exp - 100.0)
    monkeypatch.setattr(tokens, "time", clock)
    first = await verifier.verify(token, audiences=["agentmesh"])
    clock.now = exp + 29.5  # within the leeway: from the cache
    assert await verifier.verify(token, audiences=["agentmesh"]) is first
    clock.now = exp + 30.0  # at exp + leeway: no longer from the cache, verified again
    assert await verifier.verify(token, audiences=["agentmesh"]) is not first


async def test_the_result_cache_keeps_the_most_recently_used_up_to_its_size() -> None:
    verifier = TokenVerifier(TrustedKeys(issuer_keys=[KEY]), cache_size=2)
    a, b, c = _token(jti="a"), _token(jti="b"), _token(jti="c")
    first = {t: await verifier.verify(t, audiences=["agentmesh"]) for t in (a, b)}
    assert await verifier.verify(a, audiences=["agentmesh"]) is first[a]  # two fit; `a` used last
    first[c] = await verifier.verify(c, audiences=["agentmesh"])  # evicts `b`, the least recent
    assert await verifier.verify(c, audiences=["agentmesh"]) is first[c]
    assert await verifier.verify(a, audiences=["agentmesh"]) is first[a]
    assert await verifier.verify(b, audiences=["agentmesh"]) is not first[b]


# -- issued tokens ----------------------------------------------------------------------------------


def test_an_issued_token_carries_its_time_claims_and_a_unique_id() -> None:
    issuer = TokenIssuer([KEY])
    claims = jwt.decode(
        issuer.user_token(user="u", tenant="t", ttl_s=0.4), options={"verify_signature": False}
    )
    assert set(claims) == {"iss", "iat", "nbf", "exp", "jti", "sub", "tid", "aud", "scope"}
    assert claims["nbf"] == claims["iat"] and claims["exp"] == claims["iat"] + 1  # one second at least
    other = jwt.decode(issuer.user_token(user="u", tenant="t"), options={"verify_signature": False})
    assert len(claims["jti"]) == 32 and other["jti"] != claims["jti"]
    with pytest.raises(ValueError, match=r"^the mesh issuer needs at least one signing key$"):
        TokenIssuer([])


# -- what an approval is bound to -------------------------------------------------------------------


def test_the_arguments_digest_does_not_depend_on_the_order_map_entries_were_set() -> None:
    # The agent builds the request from the model's arguments, the tool reads it off the wire:
    # a map field (here a Struct's) may hold the same entries in another order.
    built, received = struct_pb2.Struct(), struct_pb2.Struct()
    names = [f"field_{i}" for i in range(12)]
    for name in names:
        built[name] = name
    for name in reversed(names):
        received[name] = name
    assert built == received and built.SerializeToString() != received.SerializeToString()
    assert arguments_digest(built) == arguments_digest(received)
    assert arguments_digest(built) == hashlib.sha256(built.SerializeToString(deterministic=True)).hexdigest()


# -- when trusted keys are read again ---------------------------------------------------------------


async def test_keys_without_a_jwks_source_never_read_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stranger = generate_issuer_key()
    (tmp_path / "None").write_text(json.dumps(jwks_document([stranger])))  # str(None) as a path
    keys = TrustedKeys(issuer_keys=[KEY])
    assert (await _refused(_token(stranger), TokenVerifier(keys))).metadata["cause"] == "unknown_kid"
    assert [key["kid"] for key in keys.document()["keys"]] == [KEY.kid]


async def test_a_jwks_file_is_checked_once_a_second_and_a_broken_one_keeps_the_previous_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    monkeypatch.setattr(trust, "time", clock)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_document([IDP])))
    keys = TrustedKeys(jwks=str(path))
    rotated = generate_issuer_key()
    path.write_text(json.dumps(jwks_document([IDP, rotated])))
    clock.now += 0.5
    assert keys.key_for(rotated.kid) is None  # not checked again within a second
    assert [key["kid"] for key in keys.document()["keys"]] == [IDP.kid]
    clock.now += 0.5
    assert {key["kid"] for key in keys.document()["keys"]} == {IDP.kid, rotated.kid}  # a second later
    path.write_text("{broken")
    with caplog.at_level(logging.WARNING, logger="agentmesh.kit.auth.trust"):
        for _ in range(3):
            clock.now += 1.0
            assert keys.key_for(rotated.kid) is not None  # the previous keys are kept
            assert len(keys.document()["keys"]) == 2
    # parsed once (the file did not change again), and the warning says why
    assert [r.getMessage() for r in caplog.records if r.name == trust.__name__] == [
        "keeping the previous JWKS: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    ]


async def test_a_remote_jwks_is_fetched_again_after_five_minutes_and_for_an_unknown_kid_after_thirty_seconds(
    jwks_server: _JwksServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    monkeypatch.setattr(trust, "time", clock)
    keys = TrustedKeys(jwks=jwks_server.url)  # the defaults, as mesh_auth builds it
    stranger = generate_issuer_key()
    clock.now += 29.5
    assert await keys.fetch_for(stranger.kid) is None and jwks_server.fetches == 1
    clock.now += 0.5  # 30 s after the last fetch
    assert await keys.fetch_for(stranger.kid) is None and jwks_server.fetches == 2
    clock.now += 300.0  # 5 minutes after it: not stale yet
    assert await keys.fetch_for(IDP.kid) is not None and jwks_server.fetches == 2
    clock.now += 0.5
    assert len(keys.document()["keys"]) == 1 and jwks_server.fetches == 2  # serving it never fetches
    jwks_server.status = 500
    with caplog.at_level(logging.WARNING, logger="agentmesh.kit.auth.trust"):
        assert await keys.fetch_for(IDP.kid) is not None and jwks_server.fetches == 3  # stale: fetched
    assert [r.getMessage() for r in caplog.records if r.name == trust.__name__] == [
        "keeping the previous JWKS (1 keys): HTTP Error 500: Internal Server Error"
    ]


def test_a_jwks_not_a_jwks_is_refused_naming_its_url(jwks_server: _JwksServer) -> None:
    jwks_server.document = {"no": "keys"}
    with pytest.raises(JwksError) as info:
        TrustedKeys(jwks=jwks_server.url)
    assert str(info.value) == (
        f"cannot fetch AGENTMESH_JWKS {jwks_server.url}: "
        f"{jwks_server.url}: not a JWKS (an object with a 'keys' list)"
    )


def test_a_remote_jwks_of_exactly_the_largest_size_loads(jwks_server: _JwksServer) -> None:
    body = json.dumps(jwks_document([IDP])).encode()
    jwks_server.document = body + b" " * (MAX_JWKS_BYTES - len(body))
    assert TrustedKeys(jwks=jwks_server.url).kids() == [IDP.kid]


class _StallingServer:
    """A TCP server on localhost that answers every request with `head` and then sends nothing."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/jwks.json"
        self.connections: list[socket.socket] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.connections.append(connection)
            connection.recv(65536)
            if self.head:
                connection.sendall(self.head)

    def close(self) -> None:
        self.closed.set()
        self.thread.join(timeout=10)
        for connection in self.connections:
            connection.close()
        self.sock.close()


def test_an_oversized_jwks_is_refused_without_waiting_for_the_rest_of_it() -> None:
    body = b" " * (MAX_JWKS_BYTES + 1)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (10 * MAX_JWKS_BYTES)
    server = _StallingServer(head + body)  # announces 2.5 MB, sends 256 KiB + 1, then stalls
    try:
        started = time.monotonic()
        with pytest.raises(JwksError, match=f"the JWKS is larger than {MAX_JWKS_BYTES} bytes"):
            TrustedKeys(jwks=server.url)
        assert time.monotonic() - started < 4.0
    finally:
        server.close()


def test_a_jwks_server_that_never_answers_fails_the_fetch_after_five_seconds() -> None:
    server = _StallingServer(b"")
    outcome: list[JwksError] = []

    def load() -> None:
        try:
            TrustedKeys(jwks=server.url)
        except JwksError as exc:
            outcome.append(exc)

    loader = threading.Thread(target=load, daemon=True)
    try:
        loader.start()
        loader.join(timeout=15)
        assert not loader.is_alive(), "the fetch has no timeout"
        assert "timed out" in str(outcome[0])
    finally:
        server.close()

"""The console's token checks, CSRF tokens and dev identities (no server needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from agentmesh.console.auth import Authentication
from agentmesh.kit.auth import Principal, TokenIssuer, generate_issuer_key, jwks_document
from agentmesh.kit.config import Settings
from agentmesh.kit.errors import Unauthenticated


@pytest.fixture
def issuer_and_auth(tmp_path: Path) -> tuple[TokenIssuer, Authentication, Path]:
    key = generate_issuer_key()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_document([key])))
    dev = tmp_path / "dev.json"
    settings = Settings.from_env({"AGENTMESH_JWKS": str(jwks), "AGENTMESH_CONSOLE_DEV_TOKENS": str(dev)})
    return TokenIssuer([key]), Authentication.from_settings(settings), dev


async def test_user_tokens_sign_in_and_service_or_delegation_tokens_do_not(
    issuer_and_auth: tuple[TokenIssuer, Authentication, Path],
) -> None:
    issuer, auth, _ = issuer_and_auth
    who = await auth.verify(issuer.user_token(user="ada", tenant="acme", scopes=["refunds:approve"]))
    assert (who.user, who.tenant, who.principal.scopes) == ("ada", "acme", frozenset({"refunds:approve"}))
    with pytest.raises(Unauthenticated):
        await auth.verify(issuer.service_token("payments"))
    delegated = issuer.delegation_token(
        domain="agentmesh", principal=Principal(subject="ada", tenant="acme"), scopes=[], actor="refunds"
    )
    with pytest.raises(Unauthenticated):
        await auth.verify(delegated)
    with pytest.raises(Unauthenticated):
        await auth.verify(TokenIssuer([generate_issuer_key()]).user_token(user="ada", tenant="acme"))
    with pytest.raises(Unauthenticated):
        await auth.verify("")


async def test_csrf_tokens_belong_to_one_session(
    issuer_and_auth: tuple[TokenIssuer, Authentication, Path],
) -> None:
    issuer, auth, _ = issuer_and_auth
    ada = await auth.verify(issuer.user_token(user="ada", tenant="acme"))
    bob = await auth.verify(issuer.user_token(user="bob", tenant="acme"))
    assert auth.csrf_token(ada) == auth.csrf_token(ada) != auth.csrf_token(bob)
    other_process = Authentication(auth.settings)
    assert other_process.csrf_token(ada) != auth.csrf_token(ada), "a per-process secret"


def test_dev_identities_appear_when_their_file_is_written(
    issuer_and_auth: tuple[TokenIssuer, Authentication, Path],
) -> None:
    _, auth, dev = issuer_and_auth
    assert auth.dev_tokens == {}
    dev.write_text(json.dumps({"demo user": "t1", "approver": "t2"}))
    assert auth.dev_tokens == {"demo user": "t1", "approver": "t2"}
    dev.write_text(json.dumps({"demo user": "t3"}))
    os.utime(dev, (1, 1))
    assert auth.dev_tokens == {"demo user": "t3"}


def test_without_trusted_keys_the_console_says_what_to_set() -> None:
    auth = Authentication(Settings.from_env({}))
    assert "AGENTMESH_JWKS" in auth.problem


async def test_form_posts_must_come_from_this_host_with_this_sessions_token(
    issuer_and_auth: tuple[TokenIssuer, Authentication, Path],
) -> None:
    issuer, auth, _ = issuer_and_auth
    who = await auth.verify(issuer.user_token(user="ada", tenant="acme"))
    good = auth.csrf_token(who)

    def post(**headers: str) -> web.Request:
        return make_mocked_request("POST", "/x", headers={"Host": "console.example:8080", **headers})

    auth.check_csrf(post(Origin="http://console.example:8080"), good, who)
    # Behind a TLS-terminating proxy the browser's origin is https: same host, accepted.
    auth.check_csrf(post(Origin="https://console.example:8080"), good, who)
    auth.check_csrf(post(), good, who)
    for refused in (
        (post(Origin="https://evil.example"), good),
        (post(Origin="null"), good),
        (post(**{"Sec-Fetch-Site": "cross-site"}), good),
        (post(), "0" * 64),
        (post(), ""),
    ):
        with pytest.raises(web.HTTPForbidden):
            auth.check_csrf(*refused, who)

"""Sign-in, the session cookie and CSRF tokens.

The session is the user's own token in an HttpOnly, SameSite=Strict cookie (Secure
when the console is served over https): no server-side session store, and the
console never holds a credential of its own. The token is verified at sign-in and on
every request (cached by the verifier until it expires); an invalid or expired one
ends the session.

CSRF: every form carries a token that is an HMAC of the session token (or, on the
sign-in form, of a random pre-session cookie) under a per-process secret; every POST
must present it, and a cross-site `Origin` or `Sec-Fetch-Site` is refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from agentmesh.console.mesh import Identity
from agentmesh.kit.auth import MESH_AUDIENCE, TokenVerifier, TrustedKeys, load_issuer_keys
from agentmesh.kit.config import Settings
from agentmesh.kit.errors import Unauthenticated

log = logging.getLogger(__name__)

SESSION_COOKIE = "am_session"
LOGIN_COOKIE = "am_login"
CSRF_FIELD = "csrf"
MAX_TOKEN_CHARS = 16 * 1024


class Authentication:
    """Verifies tokens and issues/checks the cookies and CSRF tokens of one console process."""

    def __init__(self, settings: Settings, *, dev_tokens: Path | None = None) -> None:
        self.settings = settings
        self._secret = secrets.token_bytes(32)
        self.verifier: TokenVerifier | None = None
        self.problem = ""
        issuer_keys = load_issuer_keys(settings.signing_key) if settings.signing_key else []
        if issuer_keys or settings.jwks:
            keys = TrustedKeys(issuer_keys=issuer_keys, jwks=settings.jwks)
            self.verifier = TokenVerifier(keys, issuers=settings.trusted_issuers)
        else:
            self.problem = (
                "this console has no trusted keys to verify tokens with: set AGENTMESH_JWKS "
                "(the mesh issuer's JWKS) or AGENTMESH_SIGNING_KEY"
            )
        self._dev_path = dev_tokens
        self._dev: tuple[float, dict[str, str]] = (-1.0, {})

    @classmethod
    def from_settings(cls, settings: Settings) -> Authentication:
        return cls(settings, dev_tokens=settings.console_dev_tokens)

    @property
    def dev_tokens(self) -> dict[str, str]:
        """The dev identities, re-read when the file changes (`agentmesh up` may write it later)."""
        if self._dev_path is None:
            return {}
        try:
            stamp = self._dev_path.stat().st_mtime
        except OSError:
            return {}
        if stamp != self._dev[0]:
            self._dev = (stamp, load_dev_tokens(self._dev_path))
        return self._dev[1]

    async def verify(self, token: str) -> Identity:
        if self.verifier is None:
            raise Unauthenticated(self.problem)
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("paste a token (a JWT)")
        principal = await self.verifier.verify(token, audiences=[MESH_AUDIENCE])
        if principal.is_service or principal.actor:
            raise Unauthenticated("service and delegation tokens cannot sign in to the console")
        return Identity(token=token, principal=principal)

    async def identity(self, request: web.Request) -> Identity | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        try:
            return await self.verify(token)
        except Unauthenticated:
            return None

    # -- cookies ---------------------------------------------------------------------------------

    def _secure(self, request: web.Request) -> bool:
        return request.secure or self.settings.console_secure_cookies

    def start_session(self, request: web.Request, response: web.StreamResponse, who: Identity) -> None:
        max_age = max(1, int(who.principal.expires_at - time.time()))
        response.set_cookie(
            SESSION_COOKIE,
            who.token,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self._secure(request),
        )
        response.del_cookie(LOGIN_COOKIE, path="/")

    def end_session(self, response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path="/")

    def login_nonce(self, request: web.Request, response: web.StreamResponse) -> str:
        """The sign-in form's CSRF token, bound to a random pre-session cookie."""
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        response.set_cookie(
            LOGIN_COOKIE, nonce, path="/", httponly=True, samesite="Strict", secure=self._secure(request)
        )
        return self._mac("login", nonce)

    # -- CSRF ------------------------------------------------------------------------------------

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def csrf_token(self, who: Identity) -> str:
        return self._mac("session", who.token)

    def check_csrf(self, request: web.Request, form_value: str, who: Identity | None) -> None:
        """Refuses (403) a POST that is cross-site or lacks the form's CSRF token."""
        origin = request.headers.get("Origin")
        # The host only: behind a TLS-terminating proxy the browser's scheme is https while
        # this server sees http.
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="cross-origin form posts are refused")
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise web.HTTPForbidden(text="cross-site form posts are refused")
        if who is not None:
            expected = self.csrf_token(who)
        else:
            nonce = request.cookies.get(LOGIN_COOKIE, "")
            expected = self._mac("login", nonce) if nonce else ""
        if not expected or not hmac.compare_digest(expected, form_value or ""):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and try again")


def load_dev_tokens(path: Path | None) -> dict[str, str]:
    """The local mesh's dev identities (`{label: token}`, written by `agentmesh up`)."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read the console's dev tokens from %s: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(label): str(token) for label, token in data.items() if isinstance(token, str)}

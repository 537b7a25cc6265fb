"""Which keys a token may be signed with: the mesh issuer's and the IdP's JWKS.

`TrustedKeys` answers `key_for(kid)` from the mesh issuer's public keys and from
AGENTMESH_JWKS — a file (re-read when it changes) or an https URL (cached for
`max_age_s`, fetched again at once — at most every `min_refresh_s` — when a
token names a kid it does not know, which is how an IdP's key rotation shows).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jwt import PyJWK
from jwt.exceptions import InvalidKeyError, PyJWKError

from agentmesh.kit.auth.keys import IssuerKey

log = logging.getLogger(__name__)

# JWK key type / curve -> the algorithms a token signed by it may name. A token's `alg`
# must be one of its key's: never `none`, never HS* (an HMAC "signed" with a public key).
ALGORITHMS_BY_KEY: dict[tuple[str, str], tuple[str, ...]] = {
    ("OKP", "Ed25519"): ("EdDSA",),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
    ("RSA", ""): ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
}
MAX_JWKS_BYTES = 256 * 1024


class JwksError(ValueError):
    """The trusted JWKS cannot be read or parsed; the message names the source."""


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    key: PyJWK
    algorithms: tuple[str, ...]
    # The public JWK as published (what the registry's /.well-known/jwks.json serves again).
    jwk: dict[str, Any] = field(default_factory=dict, compare=False)


def _parse_jwks(document: Any, source: str) -> dict[str, TrustedKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError(f"{source}: not a JWKS (an object with a 'keys' list)")
    keys: dict[str, TrustedKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kty, crv = str(entry.get("kty", "")), str(entry.get("crv", ""))
        allowed = ALGORITHMS_BY_KEY.get((kty, crv if kty != "RSA" else ""))
        kid = entry.get("kid")
        if allowed is None or not isinstance(kid, str) or not kid:
            log.warning("ignoring a JWKS key without kid or of an unsupported type", extra={"source": source})
            continue
        if isinstance(entry.get("alg"), str):
            if entry["alg"] not in allowed:
                log.warning("ignoring JWKS key %s: alg %s does not fit its key type", kid, entry["alg"])
                continue
            allowed = (entry["alg"],)
        try:
            keys[kid] = TrustedKey(kid, PyJWK(entry, algorithm=allowed[0]), allowed, _public_only(entry))
        except (PyJWKError, InvalidKeyError) as exc:  # bad key material: InvalidKeyError, not PyJWKError
            log.warning("ignoring JWKS key %s: %s", kid, exc)
    return keys


_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _public_only(entry: dict[str, Any]) -> dict[str, Any]:
    # A JWKS file that (wrongly) holds private members must never be served on with them.
    return {k: v for k, v in entry.items() if k not in _PRIVATE_MEMBERS}


class TrustedKeys:
    """Public keys trusted for verification, by kid."""

    def __init__(
        self,
        *,
        issuer_keys: list[IssuerKey] = (),  # type: ignore[assignment]
        jwks: str | None = None,
        max_age_s: float = 300.0,
        min_refresh_s: float = 30.0,
    ) -> None:
        self._own = _parse_jwks({"keys": [k.public() for k in issuer_keys]}, "the mesh issuer key")
        self._source = jwks
        self._max_age_s = max_age_s
        self._min_refresh_s = min_refresh_s
        self._external: dict[str, TrustedKey] = {}
        self._loaded_at = 0.0
        self._attempted_at = 0.0
        self._file_stamp: tuple[float, int] | None = None
        self._lock = threading.Lock()
        if jwks:
            self._refresh(force=True)

    @property
    def is_remote(self) -> bool:
        return bool(self._source) and str(self._source).startswith(("https://", "http://"))

    def kids(self) -> list[str]:
        return sorted({*self._own, *self._external})

    def document(self) -> dict[str, Any]:
        """The public JWKS of every key loaded: the mesh issuer's, then AGENTMESH_JWKS's (file re-read)."""
        if self._source and not self.is_remote:
            self._refresh(force=False)
        merged = {**self._external, **self._own}
        return {"keys": [key.jwk for key in merged.values()]}

    def key_for(self, kid: str) -> TrustedKey | None:
        """The key for `kid` from what is loaded (a JWKS file is re-read when it changed)."""
        key = self._own.get(kid)
        if key is not None:
            return key
        if self._source and not self.is_remote:
            self._refresh(force=False)
        return self._external.get(kid)

    async def fetch_for(self, kid: str) -> TrustedKey | None:
        """As `key_for`, but fetches a remote JWKS (off the event loop) when stale or `kid` is unknown."""
        key = self.key_for(kid)
        if self.is_remote and (key is None or time.monotonic() - self._loaded_at > self._max_age_s):
            await asyncio.to_thread(self._refresh, force=False, unknown_kid=key is None)
            key = self.key_for(kid)
        return key

    def _refresh(self, *, force: bool, unknown_kid: bool = False) -> None:
        source = str(self._source)
        now = time.monotonic()
        if not self.is_remote:
            if not force and now - self._attempted_at < 1.0:
                return
            self._attempted_at = now
            try:
                stat = os.stat(source)
            except OSError as exc:
                if force:
                    raise JwksError(f"cannot read AGENTMESH_JWKS {source}: {exc.strerror}") from None
                return
            stamp = (stat.st_mtime, stat.st_size)
            if stamp != self._file_stamp:
                with self._lock:
                    try:
                        self._external = _parse_jwks(json.loads(Path(source).read_text()), source)
                    except (OSError, ValueError) as exc:
                        if force:
                            raise JwksError(f"cannot load AGENTMESH_JWKS {source}: {exc}") from None
                        log.warning("keeping the previous JWKS: %s", exc)
                    self._file_stamp = stamp
            return
        stale = now - self._loaded_at > self._max_age_s
        if not (force or stale or unknown_kid):
            return
        if not force and now - self._attempted_at < self._min_refresh_s:
            return  # an unknown kid does not let callers make us fetch in a loop
        with self._lock:
            self._attempted_at = now
            try:
                self._external = _parse_jwks(_fetch(source), source)
                self._loaded_at = now
            except (OSError, ValueError) as exc:
                if force:
                    raise JwksError(f"cannot fetch AGENTMESH_JWKS {source}: {exc}") from None
                log.warning("keeping the previous JWKS (%d keys): %s", len(self._external), exc)


def _fetch(url: str) -> Any:
    request = urllib.request.Request(url, headers={"accept": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise JwksError(f"{url}: the JWKS is larger than {MAX_JWKS_BYTES} bytes")
    return json.loads(body)

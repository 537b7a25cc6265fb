"""Page tokens (pure): the one codec for every List RPC's `page_token` (tasks, tools, agents).

A page token is opaque to callers: version byte + the listing's name + a fingerprint of the
request's filters + the cursor, sealed with a keyed BLAKE2b checksum and base64url encoded.
The key is not a secret (a cursor grants nothing: every item on a page is still checked
against the caller), so the seal only has to reject garbage, truncation, edits and tokens
reused with other filters or for another listing — each is INVALID_ARGUMENT naming
`page_token` (reason INVALID_PAGE_TOKEN).

    filters = filter_fingerprint(request.states, request.session_id)
    cursor = decode_page_token(request.page_token, "owner", filters) if request.page_token else ""
    ...
    next_token = encode_page_token("owner", filters, last_cursor)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable

from agentmesh.kit.errors import FieldViolation, InvalidArgument

_TOKEN_VERSION = 1
_SEAL_KEY = b"agentmesh.page-token.v1"
_SEAL_BYTES = 12


def filter_fingerprint(*parts: str | int | Iterable[str | int]) -> str:
    """A short digest of the request fields that must not change between pages (an iterable
    part counts as a set: its order does not matter)."""
    canon = [sorted(str(v) for v in p) if not isinstance(p, str | int) else str(p) for p in parts]
    return hashlib.blake2b(json.dumps(canon).encode(), digest_size=8).hexdigest()


def _seal(body: bytes) -> bytes:
    return hashlib.blake2b(body, key=_SEAL_KEY, digest_size=_SEAL_BYTES).digest()


def encode_page_token(listing: str, filters: str, cursor: str) -> str:
    body = bytes([_TOKEN_VERSION]) + json.dumps([listing, filters, cursor], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body + _seal(body)).rstrip(b"=").decode()


def decode_page_token(token: str, listing: str, filters: str) -> str:
    """The cursor inside `token`; INVALID_ARGUMENT if it is garbage or belongs to other filters."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise _bad_token("is not a token this server issued") from None
    body, seal = raw[:-_SEAL_BYTES], raw[-_SEAL_BYTES:]
    if len(raw) <= _SEAL_BYTES or body[0] != _TOKEN_VERSION or _seal(body) != seal:
        raise _bad_token("is not a token this server issued")
    try:
        token_listing, token_filters, cursor = json.loads(body[1:])
    except (ValueError, TypeError):
        raise _bad_token("is not a token this server issued") from None
    if token_listing != listing or token_filters != filters:
        raise _bad_token("was issued for a different request; keep the other fields unchanged between pages")
    if not isinstance(cursor, str):
        raise _bad_token("is not a token this server issued")
    return cursor


def _bad_token(why: str) -> InvalidArgument:
    return InvalidArgument(
        f"page_token {why}",
        violations=[FieldViolation("page_token", why, "INVALID_PAGE_TOKEN")],
    )

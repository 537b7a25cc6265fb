"""Listing tasks (pure): index members, page sizes and page tokens.

Task indexes (an owner's tasks, a tenant's tasks awaiting approval) are sorted
sets whose members are `<created ms, 13 digits>:<task id>` with score 0, so a
lexicographic range walks them newest first and a member is its own cursor.

A page token is opaque to callers: version byte + the cursor + a fingerprint
of the request's filters, sealed with a keyed BLAKE2b checksum and base64url
encoded. The key is not a secret (the cursor grants nothing: every task on a
page is still checked against the caller), so the seal only has to reject
garbage, truncation, edits and tokens reused with other filters — each is
INVALID_ARGUMENT naming `page_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable

from agentmesh.kit.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_TOKEN_VERSION = 1
_SEAL_KEY = b"agentmesh.page-token.v1"
_SEAL_BYTES = 12


def index_member(create_ms: int, task_id: str) -> str:
    return f"{create_ms:013d}:{task_id}"


def member_task_id(member: str | bytes) -> str:
    text = member.decode() if isinstance(member, bytes) else member
    return text.partition(":")[2]


def page_size(requested: int) -> int:
    """0 -> the default (50); above 500 -> 500; negative -> INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            violations=[FieldViolation("page_size", f"is {requested}; must be 0 or more", "OUT_OF_RANGE")],
        )
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


def filter_fingerprint(*parts: str | int | Iterable[str | int]) -> str:
    """A short digest of the request fields that must not change between pages."""
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

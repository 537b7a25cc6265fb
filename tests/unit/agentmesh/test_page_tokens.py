"""The one page-token codec (agentmesh/kit/pages.py), used by the task and registry listings."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentmesh.kit import pages
from agentmesh.kit.errors import InvalidArgument


@given(cursor=st.text(max_size=80), filters=st.text(max_size=20))
def test_tokens_round_trip(cursor: str, filters: str) -> None:
    token = pages.encode_page_token("owner", filters, cursor)
    assert token.isascii() and "=" not in token
    assert pages.decode_page_token(token, "owner", filters) == cursor


@pytest.mark.parametrize("garbage", ["", "x", "not a token!", "AAAA", "a" * 200, "%%%%"])
def test_garbage_is_invalid_argument(garbage: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        pages.decode_page_token(garbage, "owner", "f")
    assert caught.value.violations[0].field == "page_token"


def test_an_edited_token_is_refused() -> None:
    token = pages.encode_page_token("owner", "f", "0000000000001:task-a")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[5] ^= 0x01
    edited = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidArgument, match="not a token this server issued"):
        pages.decode_page_token(edited, "owner", "f")


def test_a_token_for_other_filters_or_listing_is_refused() -> None:
    token = pages.encode_page_token("owner", pages.filter_fingerprint([2], "s1"), "c")
    with pytest.raises(InvalidArgument, match="different request"):
        pages.decode_page_token(token, "owner", pages.filter_fingerprint([3], "s1"))
    with pytest.raises(InvalidArgument, match="different request"):
        pages.decode_page_token(token, "approval", pages.filter_fingerprint([2], "s1"))


def test_filter_fingerprint_ignores_order_of_states() -> None:
    assert pages.filter_fingerprint([1, 3], "s") == pages.filter_fingerprint([3, 1], "s")
    assert pages.filter_fingerprint([1], "s") != pages.filter_fingerprint([1], "t")

from __future__ import annotations

import base64
import re
from typing import Any

import protovalidate
import pytest
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from tool_registry import patterns
from tool_registry.descriptors import load_tool_schema

BOUND = st.one_of(st.none(), st.integers(-(10**12), 10**12), st.integers(-(2**64), 2**64))


@settings(max_examples=300)
@given(BOUND, BOUND, st.lists(st.integers(-(10**13), 10**13), max_size=20))
def test_int_range_pattern_matches_exactly_the_canonical_integers_in_range(
    low: int | None, high: int | None, probes: list[int]
) -> None:
    compiled = re.compile(patterns.anchored(patterns.int_range_pattern([(low, high)])))
    edges = [v + d for v in (low, high, 0) if v is not None for d in (-1, 0, 1)]
    for number in [*probes, *edges]:
        expected = (low is None or number >= low) and (high is None or number <= high)
        assert bool(compiled.fullmatch(str(number))) == expected, (low, high, number)
    for text in ("-0", "01", "+1", " 1", "1 ", "", "1.0", "1e3"):
        assert not compiled.fullmatch(text)


def test_int_range_pattern_of_empty_and_split_ranges() -> None:
    assert not re.fullmatch(patterns.int_range_pattern([(5, 4)]), "4")
    both = re.compile(patterns.anchored(patterns.int_range_pattern([(21, 100), (-100, 9)])))
    assert [n for n in range(-2, 25) if both.fullmatch(str(n))] == [-2, -1, *range(10), 21, 22, 23, 24]


@settings(max_examples=200)
@given(st.binary(max_size=40), st.integers(0, 12), st.integers(0, 12))
def test_base64_pattern_is_the_canonical_encoding_with_exact_lengths(
    data: bytes, low: int, span: int
) -> None:
    compiled = re.compile(patterns.anchored(patterns.base64_pattern(low, low + span)))
    encoded = base64.b64encode(data).decode()
    assert bool(compiled.fullmatch(encoded)) == (low <= len(data) <= low + span)
    if encoded.endswith("="):  # a non-canonical spelling of the same bytes (padding bits set) is refused
        last = encoded.rstrip("=")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        tweaked = last[:-1] + alphabet[alphabet.index(last[-1]) ^ 1] + encoded[len(last) :]
        if base64.b64decode(tweaked) == data:
            assert not compiled.fullmatch(tweaked)
    assert not compiled.fullmatch(encoded.rstrip("=") + ("" if encoded.endswith("=") else "="))


@pytest.mark.parametrize(
    ("re2", "ecma"),
    [
        (r"^[A-Z]{3}-\d{3}$", "^[A-Z]{3}-[0-9]{3}$"),
        (r"\w+\s\S", "[0-9A-Za-z_]+[\\t\\n\\f\\r ][^\\t\\n\\f\\r ]"),
        (r"a.b", "a[^\\n]b"),
        (r"\Aab\z", "^ab$"),
        (r"(?P<year>\d{4})", "(?:[0-9]{4})"),
        (r"[[:alpha:]_]+", "[A-Za-z_]+"),
        (r"[\d.-]", "[0-9\\.-]"),
        (r"a/b{x", "a\\/b\\{x"),
        (r"\x41\x{1F600}", "A\U0001f600"),
    ],
)
def test_re2_patterns_translate_to_the_common_subset(re2: str, ecma: str) -> None:
    assert patterns.re2_to_ecma(re2) == ecma


@pytest.mark.parametrize(
    "re2", [r"(?i)abc", r"\pL+", r"[\D]", r"\Qa.b\E", r"[[:^alpha:]]", r"(unclosed", r"\C"]
)
def test_re2_features_without_an_ecma_equivalent_are_refused(re2: str) -> None:
    with pytest.raises(patterns.UntranslatablePattern):
        patterns.re2_to_ecma(re2)


# -- formats agree with protovalidate ----------------------------------------------------


@pytest.fixture(scope="module")
def rules_class(rich_set: Any) -> Any:
    return load_tool_schema(rich_set, "rich.v1.Rich/Rules").request_class


def _protovalidate_accepts(rules_class: Any, field: str, value: str) -> bool:
    message = rules_class(**{field: value})
    return not any(
        v.proto.field is not None and v.proto.field.elements[0].field_name == field
        for v in protovalidate.collect_violations(message)
    )


FORMAT_ALPHABETS = {
    "email": ("email", "ab.-@1Z_+!~"),
    "host": ("hostname", "ab.-1Z"),
    "request_uuid": ("uuid", "0a-fF9g"),
    "ipv4": ("ipv4", "0129.5"),
    "ulid": ("ulid", "07ZzIiLU"),
    "tuuid": ("tuuid", "0aF9g"),
}


@pytest.mark.parametrize("field", sorted(FORMAT_ALPHABETS))
def test_format_patterns_agree_with_protovalidate(field: str, rules_class: Any) -> None:
    name, alphabet = FORMAT_ALPHABETS[field]
    compiled = re.compile(patterns.FORMATS[name])
    samples = {
        "email": ["a@b.co", "a@b@c", "a.b@-x.com", "x@y", "@y.z", "a@b..c", "a@" + "b" * 64 + ".com"],
        "hostname": ["example.com", "a-b.c", "-a.com", "a..b", "1.2.3.4", "a.b.", "x" * 64, "1a.2b"],
        "uuid": ["6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6ba7b8109dad11d180b400c04fd430c8"],
        "ipv4": ["1.2.3.4", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3"],
        "ulid": ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "81ARZ3NDEKTSV4RRFFQ69G5FAV"],
        "tuuid": ["6ba7b8109dad11d180b400c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"],
    }[name]

    @settings(max_examples=300)
    @given(st.one_of(st.sampled_from(samples), st.text(alphabet, min_size=1, max_size=40)))
    def check(value: str) -> None:
        ours = bool(compiled.fullmatch(value))
        assert ours == _protovalidate_accepts(rules_class, field, value), value

    check()


# -- well-known type strings agree with json_format ------------------------------------------


def _parses(message: Any, text: str) -> bool:
    try:
        json_format.Parse(f'"{text}"', message)
    except json_format.ParseError:
        return False
    return True


@settings(max_examples=300)
@given(
    st.one_of(
        st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + "Z"),
        st.from_regex(
            r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,10})?(Z|[+-][0-9]{2}:[0-9]{2})\Z"
        ),
    )
)
def test_timestamp_pattern_accepts_only_what_protobuf_parses(text: str) -> None:
    if re.fullmatch(patterns.TIMESTAMP, text):
        assert _parses(timestamp_pb2.Timestamp(), text), text


@settings(max_examples=300)
@given(st.from_regex(r"\A-?[0-9]{1,13}(\.[0-9]{1,10})?s\Z"))
def test_duration_pattern_accepts_only_what_protobuf_parses(text: str) -> None:
    if re.fullmatch(patterns.DURATION, text):
        assert _parses(duration_pb2.Duration(), text), text


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("1.5s", True),
        ("-0.5s", True),
        ("315576000000s", True),
        ("315576000001s", False),
        ("1.5", False),
        ("01s", False),
        ("1.0000000001s", False),
        ("1.5S", False),
    ],
)
def test_duration_pattern_examples(text: str, accepted: bool) -> None:
    assert bool(re.fullmatch(patterns.DURATION, text)) is accepted

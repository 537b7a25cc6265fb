"""Regular expressions shared by the JSON Schema exporter and the argument converter.

Every pattern here is written in the common subset of ECMA-262 (what JSON
Schema's `pattern` means) and Python's `re` (what the converter runs), so the
schema a model reads and the check the converter applies are the same
expression. Anchors are added by the user of a pattern: the schema wraps it in
`^(?:…)$`, the converter calls `fullmatch`.

Also here: the translation of protovalidate's RE2 patterns to that subset,
canonical decimal integer ranges as regexes (64-bit integers travel as
strings), and base64 with an exact decoded-length range.
"""

from __future__ import annotations

import functools
import re

# -- literals -------------------------------------------------------------------

_SYNTAX = set("^$\\.*+?()[]{}|/")


def escape(text: str) -> str:
    """Escape a literal for ECMA-262 (also valid, and equal in meaning, in Python `re`)."""
    out = []
    for ch in text:
        if ch in _SYNTAX:
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


# -- integers -------------------------------------------------------------------


def _same_length(lo: str, hi: str) -> list[str]:
    """Regex alternatives for the digit strings lo..hi (equal length, lo <= hi)."""
    n = len(lo)
    if lo == hi:
        return [lo]
    if lo == "0" * n and hi == "9" * n:
        return ["[0-9]" + (f"{{{n}}}" if n > 1 else "")]
    if n == 1:
        return [f"[{lo}-{hi}]"]
    if lo[0] == hi[0]:
        return [lo[0] + _group(_same_length(lo[1:], hi[1:]))]
    low_full, high_full = lo[1:] == "0" * (n - 1), hi[1:] == "9" * (n - 1)
    parts = [] if low_full else [lo[0] + _group(_same_length(lo[1:], "9" * (n - 1)))]
    first = int(lo[0]) + (0 if low_full else 1)
    last = int(hi[0]) - (0 if high_full else 1)
    if first <= last:
        parts.append((str(first) if first == last else f"[{first}-{last}]") + _digits(n - 1))
    if not high_full:
        parts.append(hi[0] + _group(_same_length("0" * (n - 1), hi[1:])))
    return parts


def _digits(count: int, most: int | None = -1) -> str:
    """`[0-9]` repeated count times (or count..most times; most None: unbounded)."""
    if most == -1 or most == count:
        return "" if count == 0 else "[0-9]" if count == 1 else f"[0-9]{{{count}}}"
    return f"[0-9]{{{count},{'' if most is None else most}}}"


def _group(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _natural_range(lo: int, hi: int | None) -> list[str]:
    """Alternatives matching the canonical decimal form of lo..hi (hi None: unbounded), 0 <= lo."""
    parts: list[str] = []
    if lo == 0:
        parts.append("0")
        if hi == 0:
            return parts
        lo = 1
    length = len(str(lo))
    block_end = 10**length - 1
    if lo != 10 ** (length - 1) or (hi is not None and hi < block_end):  # a partial first block
        top = block_end if hi is None or hi > block_end else hi
        parts += _same_length(str(lo), str(top))
        lo = top + 1
        if hi is not None and lo > hi:
            return parts
    length = len(str(lo))  # lo is now a power of ten
    if hi is None:
        parts.append("[1-9]" + _digits(length - 1, None))
        return parts
    hi_length = len(str(hi))
    full_last = hi_length if hi == 10**hi_length - 1 else hi_length - 1
    if full_last >= length:
        parts.append("[1-9]" + _digits(length - 1, full_last - 1))
    if hi != 10**hi_length - 1:
        parts += _same_length(str(10 ** (hi_length - 1)), str(hi))
    return parts


def int_range_pattern(intervals: list[tuple[int | None, int | None]]) -> str:
    """A regex (unanchored) matching exactly the canonical decimal strings of integers in the intervals.

    Canonical: no sign for zero and positives, `-` for negatives, no leading zeros.
    """
    alternatives: list[str] = []
    for lo, hi in intervals:
        if lo is not None and hi is not None and lo > hi:
            continue
        if hi is None or hi >= 0:  # non-negative part
            start = 0 if lo is None else max(lo, 0)
            alternatives += _natural_range(start, hi)
        if lo is None or lo < 0:  # negative part: magnitudes max(1, -hi)..-lo
            top = None if lo is None else -lo
            bottom = 1 if hi is None or hi >= 0 else -hi
            if top is None or bottom <= top:
                alternatives += ["-" + a for a in _natural_range(bottom, top)]
    if not alternatives:
        return "(?!)"
    return "|".join(alternatives)


CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")

# -- base64 ---------------------------------------------------------------------

_B64 = "[A-Za-z0-9+/]"
# The last significant character of a canonical encoding carries zero padding bits.
_B64_LAST_OF_ONE = "[AQgw]"  # 1 trailing byte: 4 zero bits
_B64_LAST_OF_TWO = "[AEIMQUYcgkosw048]"  # 2 trailing bytes: 2 zero bits


def base64_pattern(min_bytes: int = 0, max_bytes: int | None = None) -> str:
    """Canonical padded standard base64 (what protobuf JSON emits) of min..max decoded bytes, exactly."""
    alternatives = []
    for remainder, tail in (
        (0, ""),
        (1, f"{_B64}{_B64_LAST_OF_ONE}=="),
        (2, f"{_B64}{_B64}{_B64_LAST_OF_TWO}="),
    ):
        # bytes = 3 * groups + remainder
        low = max(0, -(-(min_bytes - remainder) // 3))
        if max_bytes is None:
            quantifier = f"{{{low},}}"
        else:
            high = (max_bytes - remainder) // 3
            if high < low:
                continue
            quantifier = f"{{{low}}}" if low == high else f"{{{low},{high}}}"
        groups = "" if quantifier == "{0}" else f"(?:{_B64}{{4}}){quantifier}"
        alternatives.append(groups + tail)
    return "|".join(alternatives) if alternatives else "(?!)"


# -- well-known types -----------------------------------------------------------

_LEAP_YEAR = "(?!0000)(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_YEAR = "(?!0000)[0-9]{4}"
_DATE = (
    f"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    f"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
# RFC 3339 as protobuf's JSON parser takes it: upper-case T and Z, up to 9 fractional
# digits, an offset within ±23:59. The first and last day of the Timestamp range are
# refused with an offset that could push them outside it.
TIMESTAMP = (
    "(?!0001-01-01T[0-9:.]*\\+)(?!9999-12-31T[0-9:.]*-)"
    f"{_DATE}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{{1,9}})?"
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
# Durations: seconds with up to 9 fractional digits and the suffix `s`, within ±315576000000s.
DURATION = f"-?(?:{int_range_pattern([(0, 315_576_000_000)])})(?:\\.[0-9]{{1,9}})?s"
_PATH = "[a-z][A-Za-z0-9]*(?:\\.[a-z][A-Za-z0-9]*)*"
# FieldMask: comma-separated lowerCamel paths.
FIELD_MASK = f"(?:{_PATH}(?:,{_PATH})*)?"

# -- string formats (protovalidate's definitions) --------------------------------

_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
FORMATS: dict[str, str] = {
    # WHATWG HTML "valid e-mail address", as protovalidate defines `email`.
    "email": f"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\\.{_LABEL})*",
    # At most 253 characters; labels of 1-63 letters, digits, hyphens; the last not all digits.
    "hostname": f"(?=[^\\n]{{1,253}}$)(?:{_LABEL}\\.)*(?![0-9]+\\.?$){_LABEL}\\.?",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "tuuid": "[0-9a-fA-F]{32}",
    "ipv4": f"(?:{_OCTET}\\.){{3}}{_OCTET}",
    "ulid": "[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}",
}


# -- RE2 -> ECMA-262 --------------------------------------------------------------


class UntranslatablePattern(ValueError):
    """The RE2 pattern uses a feature with no equal meaning in ECMA-262; the reason says which."""


_CLASS_SHORTHANDS = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r "}
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\u0000-\\u007f",
    "blank": "\\t ",
    "cntrl": "\\u0000-\\u001f\\u007f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\u000b\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_SIMPLE_ESCAPES = {"t": "\\t", "n": "\\n", "r": "\\r", "f": "\\f", "v": "\\u000b", "a": "\\u0007"}


@functools.lru_cache(maxsize=1024)
def re2_to_ecma(pattern: str) -> str:
    """Translate an RE2 pattern to ECMA-262 with the same matches (and the same in Python `re`).

    Only the common core is taken: literals, `.`, classes (with `\\d \\w \\s` and POSIX
    classes), groups, alternation, quantifiers, `^ $ \\A \\z \\b \\B`. Shorthands are
    spelled out as ASCII classes because ECMA-262, RE2 and Python disagree on their
    Unicode meaning; `.` becomes `[^\\n]` (ECMA's `.` also refuses `\\r`). Flags,
    Unicode classes, `\\Q…\\E`, `\\C` and the like raise UntranslatablePattern.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    depth = 0
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            token, i = _escape_outside(pattern, i)
            out.append(token)
            continue
        if ch == "[":
            token, i = _char_class(pattern, i)
            out.append(token)
            continue
        if ch == "(":
            if pattern.startswith("(?P<", i) or pattern.startswith("(?<", i):
                end = pattern.find(">", i)
                if end < 0:
                    raise UntranslatablePattern("unterminated group name")
                out.append("(?:")
                i = end + 1
            elif pattern.startswith("(?:", i):
                out.append("(?:")
                i += 3
            elif pattern.startswith("(?", i):
                raise UntranslatablePattern("RE2 flags such as (?i) have no ECMA-262 equivalent")
            else:
                out.append("(")
                i += 1
            depth += 1
            continue
        if ch == ")":
            depth -= 1
            if depth < 0:
                raise UntranslatablePattern("unbalanced parenthesis")
            out.append(")")
        elif ch == ".":
            out.append("[^\\n]")
        elif ch == "{":
            match = re.match(r"\{(\d+)(,(\d*))?\}", pattern[i:])
            if match is None:
                out.append("\\{")  # RE2 takes a brace that starts no repetition literally
            else:
                out.append(match.group(0))
                i += len(match.group(0))
                continue
        elif ch == "}":
            out.append("\\}")
        elif ch == "/":
            out.append("\\/")
        elif ch in "^$|*+?":
            out.append(ch)
        else:
            out.append(escape(ch))
        i += 1
    if depth != 0:
        raise UntranslatablePattern("unbalanced parenthesis")
    translated = "".join(out)
    try:
        re.compile(translated)
    except re.error as exc:
        raise UntranslatablePattern(f"does not compile after translation: {exc}") from None
    return translated


def _escape_outside(pattern: str, i: int) -> tuple[str, int]:
    if i + 1 >= len(pattern):
        raise UntranslatablePattern("trailing backslash")
    ch = pattern[i + 1]
    if ch in _CLASS_SHORTHANDS:
        return f"[{_CLASS_SHORTHANDS[ch]}]", i + 2
    if ch in "DWS":
        return f"[^{_CLASS_SHORTHANDS[ch.lower()]}]", i + 2
    if ch == "A":
        return "^", i + 2
    if ch == "z":
        return "$", i + 2
    if ch in "bB":
        return "\\" + ch, i + 2
    return _escape_common(pattern, i)


def _escape_common(pattern: str, i: int) -> tuple[str, int]:
    ch = pattern[i + 1]
    if ch in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[ch], i + 2
    if ch == "x":
        match = re.match(r"\\x(?:\{([0-9A-Fa-f]{1,6})\}|([0-9A-Fa-f]{2}))", pattern[i:])
        if match is None:
            raise UntranslatablePattern("malformed \\x escape")
        return escape(chr(int(match.group(1) or match.group(2), 16))), i + len(match.group(0))
    if ch.isalnum():
        raise UntranslatablePattern(f"escape \\{ch} has no ECMA-262 equivalent")
    return escape(ch), i + 2


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    out = ["["]
    i += 1
    if i < len(pattern) and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True
    while i < len(pattern):
        ch = pattern[i]
        if ch == "]" and not first:
            out.append("]")
            return "".join(out), i + 1
        first = False
        if pattern.startswith("[:", i):
            end = pattern.find(":]", i)
            name = pattern[i + 2 : end] if end > 0 else ""
            if name.startswith("^") or name not in _POSIX_CLASSES:
                raise UntranslatablePattern(f"POSIX class [:{name}:] is not supported")
            out.append(_POSIX_CLASSES[name])
            i = end + 2
            continue
        if ch == "\\":
            if i + 1 >= len(pattern):
                raise UntranslatablePattern("trailing backslash")
            nxt = pattern[i + 1]
            if nxt in _CLASS_SHORTHANDS:
                out.append(_CLASS_SHORTHANDS[nxt])
                i += 2
                continue
            if nxt in "DWSpPbB":
                raise UntranslatablePattern(f"\\{nxt} inside a character class is not supported")
            token, i = _escape_common(pattern, i)
            out.append(token if token not in ("-", "^") else "\\" + token)
            continue
        if ch in "[]^\\":
            out.append("\\" + ch)
        elif ch == "-":
            out.append("-")
        else:
            out.append(escape(ch))
        i += 1
    raise UntranslatablePattern("unterminated character class")

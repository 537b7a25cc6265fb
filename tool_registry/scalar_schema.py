"""JSON Schema of scalar fields with their protovalidate rules: integers (JSON numbers and
canonical decimal strings, exact intervals), floats (bounds rounded to 32 bits where the field
is a `float`), strings (lengths, patterns, formats), bytes (canonical base64) and enums.

`ScalarSchemas` is the part of the exporter's builder (tool_registry/jsonschema.py) that turns
one scalar field into keywords; the builder handles messages, fields, oneofs and `$defs`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor

from tool_registry import patterns
from tool_registry.field_rules import (
    DOUBLE_MAX,
    FD,
    FLOAT_KINDS,
    FLOAT_MAX,
    INT64_KINDS,
    INT_RANGES,
    INTEGER_KINDS,
    SPECIAL_FLOATS,
    WIDE_KINDS,
    has,
)

# -- 32-bit floats ------------------------------------------------------------------


def _f32_bits(value: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", value))[0])


def _f32_from_bits(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def _f32_step(value: float, up: bool) -> float:
    if value == 0:
        tiny = _f32_from_bits(1)
        return tiny if up else -tiny
    bits = _f32_bits(value)
    return _f32_from_bits(bits + 1 if (value > 0) == up else bits - 1)


@dataclass(frozen=True)
class Cell:
    """The doubles that round to one float32 value: lo..hi, each end inclusive or not."""

    lo: float
    lo_inclusive: bool
    hi: float
    hi_inclusive: bool


def f32_cell(value: float) -> Cell:
    even = _f32_bits(value) % 2 == 0  # ties round to the even neighbour
    down, up = _f32_step(value, False), _f32_step(value, True)
    lo = -FLOAT_MAX if math.isinf(down) else (down + value) / 2
    hi = FLOAT_MAX if math.isinf(up) else (value + up) / 2
    return Cell(lo, even or math.isinf(down), hi, even or math.isinf(up))


# -- numbers --------------------------------------------------------------------------


@dataclass
class Bound:
    value: float
    inclusive: bool


def _lower_upper(group: Any) -> tuple[tuple[str, Any] | None, tuple[str, Any] | None]:
    lower = ("gt", group.gt) if has(group, "gt") else ("gte", group.gte) if has(group, "gte") else None
    upper = ("lt", group.lt) if has(group, "lt") else ("lte", group.lte) if has(group, "lte") else None
    return lower, upper


def _reversed(lower: tuple[str, Any] | None, upper: tuple[str, Any] | None) -> bool:
    """protovalidate reads gt > lt (or similar) as "outside the range"."""
    return lower is not None and upper is not None and upper[1] < lower[1]


def integer_intervals(kind: int, group: Any) -> list[tuple[int, int]]:
    """The integers the type and its gt/gte/lt/lte rules allow, as closed intervals."""
    tmin, tmax = INT_RANGES[kind]
    if group is None:
        return [(tmin, tmax)]
    lower, upper = _lower_upper(group)
    lo = tmin if lower is None else int(lower[1]) + (1 if lower[0] == "gt" else 0)
    hi = tmax if upper is None else int(upper[1]) - (1 if upper[0] == "lt" else 0)
    if _reversed(lower, upper):
        intervals = [(max(lo, tmin), tmax), (tmin, min(hi, tmax))]
    else:
        intervals = [(max(lo, tmin), min(hi, tmax))]
    return [(a, b) for a, b in intervals if a <= b]


def _float_bounds(kind: int, group: Any) -> tuple[list[tuple[Bound | None, Bound | None]], bool]:
    """Number intervals for float/double rules, and whether a rule needs a finite value."""
    is32 = kind == FD.TYPE_FLOAT
    limit = FLOAT_MAX if is32 else DOUBLE_MAX
    type_lo, type_hi = Bound(-limit, True), Bound(limit, True)
    if group is None:
        return [(type_lo, type_hi)], False
    lower, upper = _lower_upper(group)

    def low(rule: tuple[str, Any]) -> Bound:
        name, value = rule
        if not is32:
            return Bound(value, name == "gte")
        cell = f32_cell(value)
        if name == "gt":
            return Bound(cell.hi, not cell.hi_inclusive)
        return Bound(cell.lo, cell.lo_inclusive)

    def high(rule: tuple[str, Any]) -> Bound:
        name, value = rule
        if not is32:
            return Bound(value, name == "lte")
        cell = f32_cell(value)
        if name == "lt":
            return Bound(cell.lo, not cell.lo_inclusive)
        return Bound(cell.hi, cell.hi_inclusive)

    lo = type_lo if lower is None else low(lower)
    hi = type_hi if upper is None else high(upper)
    if _reversed(lower, upper):
        return [(lo, type_hi), (type_lo, hi)], True
    return [(lo, hi)], lower is not None or upper is not None


def _satisfies_float_rules(value: float, group: Any, kind: int) -> bool:
    """protovalidate's verdict for a special value (NaN, ±Infinity) under float/double rules."""
    if group is None:
        return True
    if group.finite and not math.isfinite(value):
        return False
    if has(group, "const") and value != group.const:
        return False
    if has(group, "in") and value not in list(getattr(group, "in")):
        return False
    if has(group, "not_in") and value in list(group.not_in):
        return False
    lower, upper = _lower_upper(group)
    checks: list[bool] = []
    if lower is not None:
        checks.append(value > lower[1] if lower[0] == "gt" else value >= lower[1])
    if upper is not None:
        checks.append(value < upper[1] if upper[0] == "lt" else value <= upper[1])
    if _reversed(lower, upper):
        return any(checks)
    return all(checks)


def _number_interval_schema(lo: Bound | None, hi: Bound | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if lo is not None:
        out["minimum" if lo.inclusive else "exclusiveMinimum"] = lo.value
    if hi is not None:
        out["maximum" if hi.inclusive else "exclusiveMaximum"] = hi.value
    return out


def _cell_schema(cell: Cell) -> dict[str, Any]:
    return _number_interval_schema(Bound(cell.lo, cell.lo_inclusive), Bound(cell.hi, cell.hi_inclusive))


def merge_all(schema: dict[str, Any], parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """AND `parts` into `schema`: merged where keys are free, else through allOf."""
    for part in parts:
        if any(key in schema for key in part):
            schema.setdefault("allOf", []).append(part)
        else:
            schema.update(part)
    return schema


def _b64(value: bytes) -> str:
    import base64

    return base64.b64encode(value).decode()


class ScalarSchemas:
    """Scalar keywords; the builder provides `input`, `defs` and `_comment`."""

    input: bool
    defs: dict[str, dict[str, Any]]

    def _comment(self, full_name: str) -> str:
        raise NotImplementedError

    def _scalar(
        self, kind: int, group: Any, notes: list[str], *, numbers_only: bool = False
    ) -> dict[str, Any]:
        if kind in INTEGER_KINDS:
            forms: tuple[str, ...] = ("number", "string") if kind in WIDE_KINDS else ("number",)
            if not self.input and kind in WIDE_KINDS:
                forms = ("string",)
            if numbers_only:
                forms = ("number",)
            return self._integer(kind, group, forms=forms)
        if kind in FLOAT_KINDS:
            return self._float(kind, group, numbers_only=numbers_only)
        if kind == FD.TYPE_BOOL:
            out: dict[str, Any] = {"type": "boolean"}
            if group is not None and has(group, "const"):
                out["const"] = group.const
            return out
        if kind == FD.TYPE_STRING:
            return self._string(group, notes)
        if kind == FD.TYPE_BYTES:
            return self._bytes(group, notes)
        raise AssertionError(f"unhandled field type {kind}")

    # -- integers -----------------------------------------------------------------

    def _integer(self, kind: int, group: Any, *, forms: tuple[str, ...]) -> dict[str, Any]:
        """JSON integers (forms has "number") and/or canonical decimal strings (forms has "string")."""
        intervals = integer_intervals(kind, group) if self.input else [INT_RANGES[kind]]
        if not intervals:
            return {"not": {}}
        types = [t for f, t in (("number", "integer"), ("string", "string")) if f in forms]
        out: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
        if "number" in forms:
            tmin, tmax = INT_RANGES[kind]
            if len(intervals) == 1:
                out["minimum"], out["maximum"] = intervals[0]
            else:
                out["minimum"], out["maximum"] = tmin, tmax
                out["anyOf"] = [{"minimum": intervals[0][0]}, {"maximum": intervals[1][1]}]
        if "string" in forms:
            out["pattern"] = patterns.anchored(patterns.int_range_pattern(list(intervals)))
        if group is None or not self.input:
            if not self.input and kind in WIDE_KINDS:
                return {"type": "string", "pattern": "^-?[0-9]+$", "description": "64-bit integer."}
            if (
                kind in WIDE_KINDS and "string" in forms
            ):  # full range: one shared definition, not a long pattern each
                name = ("int64" if kind in INT64_KINDS else "uint64") + (
                    "" if "number" in forms else "_string"
                )
                out["description"] = (
                    "64-bit integer: a JSON integer or a decimal string."
                    if "number" in forms
                    else "64-bit integer as a decimal string."
                )
                self.defs.setdefault(name, out)
                return {"$ref": f"#/$defs/{name}"}
            return out
        if kind in WIDE_KINDS and "number" in forms and "string" in forms:
            out["description"] = "64-bit integer: a JSON integer or a decimal string."

        def forms_of(values: Iterable[int]) -> list[Any]:
            listed: list[Any] = []
            for value in values:
                if "number" in forms:
                    listed.append(int(value))
                if "string" in forms:
                    listed.append(str(int(value)))
            return listed

        constraints: list[dict[str, Any]] = []
        if has(group, "const"):
            constraints.append({"enum": forms_of([group.const])})
        if has(group, "in"):
            constraints.append({"enum": forms_of(getattr(group, "in"))})
        if has(group, "not_in"):
            constraints.append({"not": {"enum": forms_of(group.not_in)}})
        return merge_all(out, constraints)

    # -- floats ---------------------------------------------------------------------

    def _float(self, kind: int, group: Any, *, numbers_only: bool) -> dict[str, Any]:
        if not self.input:
            return {"anyOf": [{"type": "number"}, {"enum": list(SPECIAL_FLOATS)}]}
        intervals, _ = _float_bounds(kind, group)
        number: dict[str, Any] = {"type": "number"}
        if len(intervals) == 1:
            number.update(_number_interval_schema(*intervals[0]))
        else:
            number["anyOf"] = [_number_interval_schema(lo, hi) for lo, hi in intervals]
        if group is not None:
            constraints: list[dict[str, Any]] = []
            is32 = kind == FD.TYPE_FLOAT

            def one_of(values: Iterable[float]) -> dict[str, Any]:
                finite = [v for v in values if math.isfinite(v)]
                if not is32:
                    return {"enum": finite} if finite else {"not": {}}
                cells = [_cell_schema(f32_cell(v)) for v in finite]
                if not cells:
                    return {"not": {}}
                return cells[0] if len(cells) == 1 else {"anyOf": cells}

            if has(group, "const"):
                constraints.append(one_of([group.const]))
            if has(group, "in"):
                constraints.append(one_of(list(getattr(group, "in"))))
            if has(group, "not_in"):
                constraints.append({"not": one_of(list(group.not_in))})
            merge_all(number, constraints)
        specials = (
            []
            if numbers_only
            else [
                name for name, value in SPECIAL_FLOATS.items() if _satisfies_float_rules(value, group, kind)
            ]
        )
        if not specials:
            return number
        return {"anyOf": [number, {"enum": specials}]}

    # -- strings and bytes ---------------------------------------------------------

    def _string(self, group: Any, notes: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if group is None or not self.input:
            return out
        found: list[str] = []
        constraints: list[dict[str, Any]] = []
        if has(group, "const"):
            out["const"] = group.const
        if has(group, "len"):
            out["minLength"] = out["maxLength"] = group.len
        if has(group, "min_len"):
            out["minLength"] = max(out.get("minLength", 0), group.min_len)
        if has(group, "max_len"):
            out["maxLength"] = min(out.get("maxLength", group.max_len), group.max_len)
        if has(group, "len_bytes"):
            notes.append(f"Exactly {group.len_bytes} bytes in UTF-8.")
        if has(group, "min_bytes"):
            notes.append(f"At least {group.min_bytes} bytes in UTF-8.")
        if has(group, "max_bytes"):
            notes.append(f"At most {group.max_bytes} bytes in UTF-8.")
        if has(group, "pattern"):
            try:
                found.append(patterns.re2_to_ecma(group.pattern))
            except patterns.UntranslatablePattern as exc:
                notes.append(f"Must match the RE2 regular expression {group.pattern!r} ({exc}).")
        if has(group, "prefix"):
            found.append("^" + patterns.escape(group.prefix))
        if has(group, "suffix"):
            found.append(patterns.escape(group.suffix) + "$")
        if has(group, "contains"):
            found.append(patterns.escape(group.contains))
        if has(group, "not_contains"):
            constraints.append({"not": {"pattern": patterns.escape(group.not_contains)}})
        if has(group, "in"):
            constraints.append({"enum": list(getattr(group, "in"))})
        if has(group, "not_in"):
            constraints.append({"not": {"enum": list(group.not_in)}})
        well_known = group.WhichOneof("well_known")
        if well_known is not None and getattr(group, well_known) not in (False, 0):
            self._string_format(well_known, out, found, notes)
        constraints = [{"pattern": p} for p in found] + constraints
        return merge_all(out, constraints)

    @staticmethod
    def _string_format(name: str, out: dict[str, Any], found: list[str], notes: list[str]) -> None:
        standard = {"email": "email", "hostname": "hostname", "uuid": "uuid", "ipv4": "ipv4"}
        if name in patterns.FORMATS:
            if name in standard:
                out["format"] = standard[name]
            found.append(patterns.anchored(patterns.FORMATS[name]))
            return
        described = {
            "ipv6": ("ipv6", "an IPv6 address"),
            "ip": (None, "an IPv4 or IPv6 address"),
            "uri": ("uri", "an absolute URI (RFC 3986)"),
            "uri_ref": ("uri-reference", "a URI reference (RFC 3986)"),
            "address": (None, "a hostname or an IP address"),
            "host_and_port": (None, "a host (hostname, IPv4, or [IPv6]) and a port"),
            "ip_with_prefixlen": (None, "an IP address with a prefix length"),
            "ipv4_with_prefixlen": (None, "an IPv4 address with a prefix length"),
            "ipv6_with_prefixlen": (None, "an IPv6 address with a prefix length"),
            "ip_prefix": (None, "an IP prefix"),
            "ipv4_prefix": (None, "an IPv4 prefix"),
            "ipv6_prefix": (None, "an IPv6 prefix"),
            "protobuf_fqn": (None, "a fully-qualified protobuf name"),
            "protobuf_dot_fqn": (None, "a fully-qualified protobuf name with a leading dot"),
            "well_known_regex": (None, "a valid HTTP header name or value"),
        }
        json_format, text = described.get(name, (None, f"a valid {name}"))
        if json_format:
            out["format"] = json_format
        notes.append(f"Must be {text}.")

    def _bytes(self, group: Any, notes: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "contentEncoding": "base64"}
        if not self.input:
            return out
        low, high = 0, None
        constraints: list[dict[str, Any]] = []
        if group is not None:
            if has(group, "len"):
                low = high = group.len
            if has(group, "min_len"):
                low = max(low, group.min_len)
            if has(group, "max_len"):
                high = group.max_len if high is None else min(high, group.max_len)
            well_known = group.WhichOneof("well_known")
            if well_known in ("ipv4",) and group.ipv4:
                low, high = max(low, 4), 4 if high is None else min(high, 4)
            elif well_known in ("ipv6", "uuid") and getattr(group, well_known):
                low, high = max(low, 16), 16 if high is None else min(high, 16)
            elif well_known == "ip" and group.ip:
                constraints.append(
                    {
                        "anyOf": [
                            {"pattern": patterns.anchored(patterns.base64_pattern(4, 4))},
                            {"pattern": patterns.anchored(patterns.base64_pattern(16, 16))},
                        ]
                    }
                )
            if has(group, "const"):
                constraints.append({"enum": [_b64(group.const)]})
            if has(group, "in"):
                constraints.append({"enum": [_b64(v) for v in getattr(group, "in")]})
            if has(group, "not_in"):
                constraints.append({"not": {"enum": [_b64(v) for v in group.not_in]}})
            for name, text in (
                ("pattern", "match the RE2 pattern"),
                ("prefix", "start with"),
                ("suffix", "end with"),
                ("contains", "contain"),
            ):
                if has(group, name):
                    value = getattr(group, name)
                    shown = value if isinstance(value, str) else "base64 " + _b64(value)
                    notes.append(f"Decoded bytes must {text} {shown!r}.")
        out["pattern"] = patterns.anchored(patterns.base64_pattern(low, high))
        return merge_all(out, constraints)

    # -- enums ------------------------------------------------------------------------

    def _enum(self, enum: descriptor.EnumDescriptor, group: Any) -> dict[str, Any]:
        values = list(enum.values)
        if group is not None and self.input:
            if has(group, "const"):
                values = [v for v in values if v.number == group.const]
            if has(group, "in"):
                allowed = set(getattr(group, "in"))
                values = [v for v in values if v.number in allowed]
            if has(group, "not_in"):
                refused = set(group.not_in)
                values = [v for v in values if v.number not in refused]
        if not values:
            return {"not": {}}
        out: dict[str, Any] = {"type": "string", "enum": [v.name for v in values]}
        described = [
            f"{v.name}: {self._comment(f'{enum.full_name}.{v.name}')}"
            for v in values
            if self._comment(f"{enum.full_name}.{v.name}")
        ]
        text = "\n".join(t for t in (self._comment(enum.full_name), *described) if t)
        if text:
            out["description"] = text
        return out

"""Hypothesis strategies for fuzzing real servers: any protobuf request, as bytes, often corrupted.

`requests_for(descriptor)` draws a message of that type field by field (strings short, long or
odd; numbers anywhere in their range; enum numbers defined or not; nested messages, maps and
repeated fields a few levels deep), serializes it and, one time in four, corrupts the bytes
(flip, insert, delete, truncate). The servers must answer each with a documented status.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor, message_factory
from google.protobuf.descriptor import FieldDescriptor as FD
from hypothesis import strategies as st

# The statuses no request may ever get (each one found is a bug).
FORBIDDEN = {"UNKNOWN", "INTERNAL", "DATA_LOSS", "UNIMPLEMENTED"}

_INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}

texts = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True),  # passes the id patterns: reaches the stores
    st.sampled_from(["", " ", "\x00", "../..", "{q:x}", "am:*", "%00", "😀" * 3, "a" * 129]),
    st.text(min_size=200, max_size=2000),
)


def _scalar(field: descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        return st.one_of(st.integers(low, high), st.sampled_from([0, 1, -1 if low else 1, low, high]))
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        width = 32 if kind == FD.TYPE_FLOAT else 64
        return st.floats(width=width, allow_nan=True, allow_infinity=True)
    if kind == FD.TYPE_BOOL:
        return st.booleans()
    if kind == FD.TYPE_STRING:
        return texts
    if kind == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FD.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 100))
    raise AssertionError(f"no strategy for {field.full_name}")


@st.composite
def message_of(draw: st.DrawFn, message_type: descriptor.Descriptor, depth: int = 0) -> Any:
    cls = message_factory.GetMessageClass(message_type)
    message = cls()
    fields = list(message_type.fields)
    if not fields:
        return message
    chosen = draw(
        st.lists(st.sampled_from(fields), max_size=min(len(fields), 6), unique_by=lambda f: f.number)
    )
    for field in chosen:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            for _ in range(draw(st.integers(0, 3))):
                key = draw(_scalar(key_field))
                target = getattr(message, field.name)
                if value_field.message_type is not None:
                    if depth < 3:
                        target[key].CopyFrom(draw(message_of(value_field.message_type, depth + 1)))
                else:
                    target[key] = draw(_scalar(value_field))
            continue
        if field.message_type is not None:
            if depth >= 3:
                continue
            if field.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    getattr(message, field.name).add().CopyFrom(
                        draw(message_of(field.message_type, depth + 1))
                    )
            else:
                getattr(message, field.name).CopyFrom(draw(message_of(field.message_type, depth + 1)))
            continue
        if field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buffer:
            break
        position = draw(st.integers(0, len(buffer) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip":
            buffer[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            buffer[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del buffer[position : position + draw(st.integers(1, 16))]
        else:
            del buffer[position:]
    return bytes(buffer)


@st.composite
def request_bytes(draw: st.DrawFn, message_type: descriptor.Descriptor) -> bytes:
    data: bytes = draw(message_of(message_type)).SerializeToString()
    if draw(st.integers(0, 3)) == 0:
        data = draw(corrupted(data))
    return data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)

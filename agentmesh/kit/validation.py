"""Request validation for the public API: collect field violations, raise once.

The public protos deliberately do not import buf/validate (clients in any
language need only the agentmesh protos), so each servicer states its rules
with a `Violations` collector and raises one INVALID_ARGUMENT listing every
bad field. `undefined_enum_violations` is applied to every request at the
server edge: proto3 enums are open, so an unknown number would otherwise slip
through as a bare integer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sized

from google.protobuf import descriptor
from google.protobuf.message import Message

from agentmesh.kit.errors import FieldViolation, InvalidArgument

DOMAIN_SLUG = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Session ids, request ids and similar caller-chosen identifiers.
OPAQUE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Violations:
    """Collects field violations; `raise_if_any` raises one InvalidArgument for all."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[FieldViolation]:
        return iter(self._items)

    def add(self, field: str, description: str, reason: str = "") -> None:
        self._items.append(FieldViolation(field, description, reason))

    def extend(self, violations: Iterator[FieldViolation] | list[FieldViolation]) -> None:
        self._items.extend(violations)

    def required(self, value: object, field: str) -> bool:
        """Empty strings, zero and empty containers count as missing."""
        if value in ("", 0, None) or (isinstance(value, Sized) and len(value) == 0):
            self.add(field, "is required", "REQUIRED")
            return False
        return True

    def max_length(self, value: str | bytes, limit: int, field: str) -> bool:
        size = len(value.encode() if isinstance(value, str) else value)
        if size > limit:
            self.add(field, f"is {size} bytes; at most {limit} allowed", "TOO_LONG")
            return False
        return True

    def max_items(self, value: Sized, limit: int, field: str) -> bool:
        if len(value) > limit:
            self.add(field, f"has {len(value)} items; at most {limit} allowed", "TOO_MANY")
            return False
        return True

    def matches(self, value: str, pattern: re.Pattern[str], field: str, what: str) -> bool:
        if not pattern.fullmatch(value):
            self.add(field, f"{value[:80]!r} is not a valid {what} (must match {pattern.pattern})", "PATTERN")
            return False
        return True

    def in_range(
        self, value: float, field: str, *, low: float | None = None, high: float | None = None
    ) -> bool:
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (
                f"between {low} and {high}"
                if low is not None and high is not None
                else (f"at least {low}" if low is not None else f"at most {high}")
            )
            self.add(field, f"is {value}; must be {bounds}", "OUT_OF_RANGE")
            return False
        return True

    def raise_if_any(self, message: str = "invalid request") -> None:
        if self._items:
            fields = ", ".join(v.field for v in self._items[:5])
            more = "" if len(self._items) <= 5 else f" and {len(self._items) - 5} more"
            raise InvalidArgument(f"{message}: {fields}{more}", violations=self._items)


def undefined_enum_violations(message: Message, prefix: str = "", depth: int = 0) -> list[FieldViolation]:
    """Every enum field (at any depth, maps included) holding a number its enum does not define."""
    found: list[FieldViolation] = []
    if depth > 32:  # protobuf itself refuses deeper nesting on parse; stay bounded anyway
        return found
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == descriptor.FieldDescriptor.TYPE_ENUM:
            assert field.enum_type is not None
            items = enumerate(value) if field.is_repeated else [(None, value)]
            for index, number in items:
                where = path if index is None else f"{path}[{index}]"
                _check_enum(field.enum_type, number, where, found)
        elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type is not None
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                for key, item in value.items():
                    if value_field.type == descriptor.FieldDescriptor.TYPE_ENUM:
                        assert value_field.enum_type is not None
                        _check_enum(value_field.enum_type, item, f"{path}[{key!r}]", found)
                    elif value_field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                        found.extend(undefined_enum_violations(item, f"{path}[{key!r}].", depth + 1))
            elif field.is_repeated:
                for index, item in enumerate(value):
                    found.extend(undefined_enum_violations(item, f"{path}[{index}].", depth + 1))
            else:
                found.extend(undefined_enum_violations(value, f"{path}.", depth + 1))
    return found


def _check_enum(
    enum: descriptor.EnumDescriptor, number: int, where: str, found: list[FieldViolation]
) -> None:
    if enum.values_by_number.get(number) is None:
        found.append(
            FieldViolation(where, f"{number} is not a defined {enum.full_name} value", "UNKNOWN_ENUM")
        )

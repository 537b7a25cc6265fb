"""A JSON Schema validator with ECMA-262 `pattern` semantics, for checking exported tool schemas.

Python's `re.search` lets `$` match before a trailing newline; ECMA-262 (what
JSON Schema's `pattern` means) does not. The exporter writes patterns in the
common subset of both, so the only translation needed is `$` -> `\\Z`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator, ValidationError, validators


def ecma_to_python(pattern: str) -> str:
    out = []
    in_class = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
        elif ch == "$":
            out.append(r"\Z")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


_cache: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _cache.get(pattern)
    if found is None:
        found = _cache[pattern] = re.compile(ecma_to_python(pattern))
    return found


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def validator_for(schema: dict[str, Any]) -> Any:
    Draft202012Validator.check_schema(schema)
    return EcmaValidator(schema, format_checker=jsonschema.FormatChecker())

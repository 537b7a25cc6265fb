"""ToolSchema.has_rules: a descriptor set without any protovalidate rule is not validated (and
protovalidate is not loaded); any rule anywhere in the set — field, oneof, message, nested, in
an imported file — keeps validation on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tool_registry.arguments import validate_request
from tool_registry.descriptor_files import load_or_compile
from tool_registry.descriptors import load_tool_schema, set_has_rules
from tool_registry.protoc import compile_protos

ROOT = Path(__file__).resolve().parents[3]
HEADER = 'syntax = "proto3";\npackage t.v1;\nimport "buf/validate/validate.proto";\n'
SERVICE = "service S { rpc Do(Req) returns (Req); }\n"

RULES = {
    "field": "message Req { string a = 1 [(buf.validate.field).string.min_len = 1]; }\n",
    "oneof": "message Req { oneof k { option (buf.validate.oneof).required = true; string a = 1; } }\n",
    "message": (
        "message Req {\n  option (buf.validate.message).cel =\n"
        "    {id: 'x', message: 'x', expression: 'this.a != \"\"'};\n  string a = 1;\n}\n"
    ),
    "nested": (
        "message Req { Inner inner = 1;\n"
        "  message Inner { int32 n = 1 [(buf.validate.field).int32.gt = 0]; } }\n"
    ),
    "other message": (
        "message Req { string a = 1; }\n"
        "message Unused { string b = 1 [(buf.validate.field).string.min_len = 1]; }\n"
    ),
}


def _compile(tmp_path: Path, body: str, header: str = HEADER) -> object:
    proto = tmp_path / "t.proto"
    proto.write_text(header + body + SERVICE)
    return compile_protos([proto])


@pytest.mark.parametrize("where", sorted(RULES))
def test_a_rule_anywhere_in_the_set_keeps_validation_on(tmp_path: Path, where: str) -> None:
    fds = _compile(tmp_path, RULES[where])
    assert set_has_rules(fds)  # type: ignore[arg-type]
    assert load_tool_schema(fds, "t.v1.S/Do").has_rules  # type: ignore[arg-type]


def test_a_rule_in_an_imported_file_counts(tmp_path: Path) -> None:
    (tmp_path / "inner.proto").write_text(
        HEADER.replace("t.v1", "i.v1")
        + "message Inner { int32 n = 1 [(buf.validate.field).int32.gt = 0]; }\n"
    )
    fds = _compile(
        tmp_path,
        "message Req { i.v1.Inner inner = 1; }\n",
        header='syntax = "proto3";\npackage t.v1;\nimport "inner.proto";\n',
    )
    schema = load_tool_schema(fds, "t.v1.S/Do")  # type: ignore[arg-type]
    assert schema.has_rules
    request = schema.request_class()
    request.inner.n = 0
    request.inner.SetInParent()
    assert [v.field for v in validate_request(request, schema)] == ["inner.n"]


def test_a_set_without_rules_is_not_validated(tmp_path: Path) -> None:
    fds = _compile(tmp_path, "message Req { string a = 1; }\n", header='syntax = "proto3";\npackage t.v1;\n')
    schema = load_tool_schema(fds, "t.v1.S/Do")  # type: ignore[arg-type]
    assert not schema.has_rules
    assert validate_request(schema.request_class(), schema) == []
    # protovalidate agrees: nothing to refuse.
    assert schema.validator.collect_violations(schema.request_class()) == []


def test_rules_are_still_enforced(tmp_path: Path) -> None:
    schema = load_tool_schema(_compile(tmp_path, RULES["field"]), "t.v1.S/Do")  # type: ignore[arg-type]
    assert [v.field for v in validate_request(schema.request_class(), schema)] == ["a"]


@pytest.mark.parametrize(("example", "rules"), [("dummy", False), ("crm", True), ("payments", True)])
def test_the_example_tools(example: str, rules: bool) -> None:
    assert set_has_rules(load_or_compile(ROOT / "examples" / example / f"{example}.proto")) is rules


_CALL = """
import json, sys
from examples._common import load
from tool_registry.arguments import validate_request
app = load(sys.argv[1])
schema = app.methods[sys.argv[2]].schema
violations = validate_request(schema.request_class(), schema)
print(json.dumps({"violations": len(violations), "protovalidate": "protovalidate" in sys.modules}))
"""


@pytest.mark.parametrize(
    ("example", "method", "expected"),
    [
        ("dummy", "Echo", {"violations": 0, "protovalidate": False}),
        ("crm", "GetCustomer", {"violations": 1, "protovalidate": True}),
    ],
)
def test_protovalidate_loads_only_for_a_set_with_rules(
    example: str, method: str, expected: dict[str, object]
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CALL, example, method],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected

"""tool_registry/descriptor_files.py: the descriptor sets shipped beside the example tools' .proto
files are current, the SDK serves them without compiling, and a stale or missing set falls back
to compiling (with a log line)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tool_registry.descriptor_files import (
    ShippedSet,
    build_descriptor_set,
    load_or_compile,
    stale_reason,
    write_descriptor_set,
)
from tool_registry.protoc import compile_protos

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
EXAMPLE_PROTOS = sorted(p for p in EXAMPLES.glob("*/*.proto") if p.stem == p.parent.name)


def test_every_example_tool_ships_a_descriptor_set() -> None:
    assert {p.parent.name for p in EXAMPLE_PROTOS} >= {
        "crm",
        "payments",
        "email",
        "inventory",
        "shipping",
        "dummy",
    }
    for proto in EXAMPLE_PROTOS:
        assert ShippedSet(proto).set_path.is_file(), f"{proto.name}: run `make proto`"
        assert ShippedSet(proto).digest_path.is_file(), f"{proto.name}: run `make proto`"


@pytest.mark.parametrize("proto", EXAMPLE_PROTOS, ids=lambda p: p.parent.name)
def test_shipped_descriptor_sets_are_not_stale(proto: Path) -> None:
    """The recorded source digests match the sources, and the set is what a fresh build gives."""
    assert stale_reason(proto) is None, "run `make proto` and commit the result"
    data, digests = build_descriptor_set(proto)
    assert ShippedSet(proto).set_path.read_bytes() == data, "run `make proto` and commit the result"
    assert ShippedSet(proto).digest_path.read_text() == digests


def _copy_example(tmp_path: Path, name: str = "dummy") -> Path:
    target = tmp_path / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target / f"{name}.proto"


def test_a_current_set_is_loaded_as_shipped(tmp_path: Path) -> None:
    proto = _copy_example(tmp_path)
    assert stale_reason(proto) is None
    assert load_or_compile(proto) == type(load_or_compile(proto)).FromString(
        ShippedSet(proto).set_path.read_bytes()
    )


def test_an_edited_proto_makes_its_set_stale_and_is_compiled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proto = _copy_example(tmp_path)
    proto.write_text(
        proto.read_text() + "\n// an edit after the set was built\nmessage Added { string x = 1; }\n"
    )
    assert stale_reason(proto) == "dummy.proto changed since the set was built"
    with caplog.at_level(logging.INFO, logger="tool_registry.descriptor_files"):
        fds = load_or_compile(proto)
    assert "Added" in {m.name for f in fds.file for m in f.message_type}
    assert any("out of date" in r.getMessage() for r in caplog.records)
    # Rebuilding makes it current again, and the new set holds the edit.
    write_descriptor_set(proto)
    assert stale_reason(proto) is None
    assert fds == load_or_compile(proto)


def test_a_changed_import_makes_the_set_stale(tmp_path: Path) -> None:
    """A source the set was built from besides the tool's own .proto (a local import) counts too."""
    (tmp_path / "common.proto").write_text(
        'syntax = "proto3";\npackage c.v1;\nmessage Common { string a = 1; }\n'
    )
    proto = tmp_path / "t.proto"
    proto.write_text(
        'syntax = "proto3";\npackage t.v1;\nimport "common.proto";\n'
        "service T { rpc Do(c.v1.Common) returns (c.v1.Common); }\n"
    )
    write_descriptor_set(proto)
    assert stale_reason(proto) is None
    (tmp_path / "common.proto").write_text(
        'syntax = "proto3";\npackage c.v1;\nmessage Common { string a = 1; string b = 2; }\n'
    )
    assert stale_reason(proto) == "common.proto changed since the set was built"


def test_without_a_set_the_proto_is_compiled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proto = _copy_example(tmp_path)
    ShippedSet(proto).set_path.unlink()
    assert stale_reason(proto) == "there is no dummy.binpb"
    with caplog.at_level(logging.INFO, logger="tool_registry.descriptor_files"):
        fds = load_or_compile(proto)
    assert fds == compile_protos([proto])
    assert any("no descriptor set" in r.getMessage() for r in caplog.records)


_LOADED = """
import json, sys
from examples._common import load
app = load(sys.argv[1])
print(json.dumps(sorted(m for m in ("grpc_tools.protoc", "protovalidate") if m in sys.modules)))
"""


@pytest.mark.parametrize("name", ["dummy", "crm"])
def test_an_example_tool_starts_without_protoc_or_protovalidate(name: str) -> None:
    """Building an example's ToolService reads its shipped set: no in-process compile at start."""
    out = subprocess.run(
        [sys.executable, "-c", _LOADED, name],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

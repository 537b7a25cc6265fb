"""tool_registry/protoc.py: compiling .proto files in-process leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "protos"

_COMPILE_TWICE = """
import sys
from tool_registry.protoc import ProtoCompileError, compile_protos
fixtures = sys.argv[1]
for _ in range(2):
    compile_protos([f"{fixtures}/shop/v1/inventory.proto"], [fixtures])
try:
    compile_protos([f"{fixtures}/broken.proto"], [fixtures])
except ProtoCompileError:
    pass
else:
    raise SystemExit("broken.proto compiled")
"""


def test_no_temporary_directory_outlives_the_process(tmp_path: Path) -> None:
    """Each compile used to leave one /tmp/agentmesh-protoc-* directory (the validate descriptor set)."""
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE_TWICE, str(FIXTURES)],
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []

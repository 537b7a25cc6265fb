"""The compatibility checker agrees with `buf breaking` (WIRE_JSON) on every corpus case.

Each case in tests/fixtures/compat/<case>/{before,after}/compat/v1/tool.proto
is built to an image with `buf build -o`, compared with `buf breaking` and
with tool_registry.compat on the method `compat.v1.Tool/Call`. Every message
in the corpus files is reachable from that method, so the whole-file view of
buf and the one-method view of the registry must give the same verdict.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tool_registry.compat import check_compatibility
from tool_registry.descriptors import load_tool_schema
from tool_registry.protoc import compile_protos

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fixtures" / "compat"


def _find_buf() -> Path | None:
    """buf on PATH, else beside this interpreter (the venv's bin, where buf-bin puts it)."""
    found = shutil.which("buf") or shutil.which("buf", path=str(Path(sys.executable).parent))
    return Path(found) if found else None


BUF = _find_buf()
WIRE_JSON = '{"version":"v2","breaking":{"use":["WIRE_JSON"]}}'
METHOD = "compat.v1.Tool/Call"
CASES = json.loads((CORPUS / "cases.json").read_text())


def test_corpus_is_large_and_mixed() -> None:
    verdicts = [case["expect"] for case in CASES.values()]
    assert len(CASES) >= 40
    assert verdicts.count("break") >= 15 and verdicts.count("ok") >= 15
    assert sorted(CASES) == sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


def _buf_breaks(case: Path, tmp_path: Path) -> tuple[bool, str]:
    images = {}
    for side in ("before", "after"):
        images[side] = tmp_path / f"{side}.binpb"
        subprocess.run(
            [str(BUF), "build", str(case / side), "-o", str(images[side])],
            check=True,
            capture_output=True,
            timeout=120,
        )
    result = subprocess.run(
        [
            str(BUF),
            "breaking",
            str(images["after"]),
            "--against",
            str(images["before"]),
            "--config",
            WIRE_JSON,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 100), result.stderr
    return result.returncode == 100, result.stdout + result.stderr


def _schema(case: Path, side: str):  # type: ignore[no-untyped-def]
    directory = case / side
    return load_tool_schema(compile_protos([directory / "compat" / "v1" / "tool.proto"], [directory]), METHOD)


def test_buf_is_installed() -> None:
    assert BUF is not None, "buf is not on PATH nor in the venv: run `make install` (it installs buf-bin)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_checker_agrees_with_buf(name: str, tmp_path: Path) -> None:
    assert BUF is not None, "buf is not on PATH nor in the venv: run `make install` (it installs buf-bin)"
    case = CORPUS / name
    buf_breaks, buf_output = _buf_breaks(case, tmp_path)
    violations = check_compatibility(_schema(case, "before"), _schema(case, "after"))
    ours = "\n".join(f"{v.path} {v.rule}: {v.message}" for v in violations)
    assert bool(violations) == buf_breaks, f"buf:\n{buf_output}\nregistry:\n{ours}"
    assert buf_breaks == (CASES[name]["expect"] == "break"), f"corpus expectation is wrong for {name}"
    if violations:  # every violation names a rule and says what to do
        assert all(v.rule and v.path and v.message for v in violations)

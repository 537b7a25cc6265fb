"""Generate agentmesh/v1 from proto/agentmesh/v1 with grpcio-tools and mypy-protobuf, and the
example tools' descriptor sets (`examples/<name>/<name>.binpb` + `.binpb.sha256`).

    python scripts/gen_proto.py          # regenerate in place
    python scripts/gen_proto.py --check  # exit 1 if the committed files differ

The generated files are committed; CI runs --check so a .proto change without a
regeneration (or a hand edit of generated code) fails the build. The example tools load
their descriptor set at start instead of compiling their .proto
(tool_registry/descriptor_files.py).
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages from this checkout

from tool_registry.descriptor_files import ShippedSet, build_descriptor_set  # noqa: E402

EXAMPLES = ROOT / "examples"
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("agentmesh") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    scripts = Path(sysconfig.get_path("scripts"))
    path = scripts / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise SystemExit(f"{name} not found: install the [dev] extra (mypy-protobuf)")
        return found
    return str(path)


def generate(out_dir: Path) -> list[Path]:
    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_dir / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def committed_files() -> list[Path]:
    target = ROOT / PACKAGE_DIR
    return sorted(p for p in target.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def example_protos() -> list[Path]:
    """Each example tool's own .proto (examples/<name>/<name>.proto)."""
    return sorted(p for p in EXAMPLES.glob("*/*.proto") if p.stem == p.parent.name)


def check_descriptor_sets() -> list[str]:
    problems = []
    for proto in example_protos():
        shipped = ShippedSet(proto)
        data, digests = build_descriptor_set(proto)
        for path, fresh in ((shipped.set_path, data), (shipped.digest_path, digests.encode())):
            where = path.relative_to(ROOT)
            if not path.exists():
                problems.append(f"missing: {where}")
            elif path.read_bytes() != fresh:
                problems.append(f"differs from a fresh build: {where}")
    return problems


def write_descriptor_sets() -> None:
    for proto in example_protos():
        shipped = ShippedSet(proto)
        data, digests = build_descriptor_set(proto)
        shipped.set_path.write_bytes(data)
        shipped.digest_path.write_text(digests)
        print(f"wrote {shipped.set_path.relative_to(ROOT)} (+ {shipped.digest_path.name})")


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        committed = {p.name: p for p in committed_files()}
        problems: list[str] = []
        for name in sorted(fresh.keys() - committed.keys()):
            problems.append(f"missing from agentmesh/v1: {name}")
        for name in sorted(committed.keys() - fresh.keys()):
            problems.append(f"stale file in agentmesh/v1 (no .proto generates it): {name}")
        for name in sorted(fresh.keys() & committed.keys()):
            new = fresh[name].read_text().splitlines(keepends=True)
            old = committed[name].read_text().splitlines(keepends=True)
            if new != old:
                diff = "".join(
                    difflib.unified_diff(old, new, f"committed/{name}", f"regenerated/{name}", n=1)
                )
                problems.append(f"differs: {name}\n{diff[:4000]}")
    problems += check_descriptor_sets()
    if problems:
        print("generated code is out of date; run `make proto` and commit the result:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        f"proto-check: {len(fresh)} generated files match proto/, "
        f"{len(example_protos())} example descriptor sets match their .proto"
    )
    return 0


def write() -> int:
    target = ROOT / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    for stale in committed_files():
        stale.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, target / path.name)
            print(f"wrote {PACKAGE_DIR / path.name}")
    write_descriptor_sets()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    ns = parser.parse_args()
    return check() if ns.check else write()


if __name__ == "__main__":
    sys.exit(main())

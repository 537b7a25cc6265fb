"""Pre-built descriptor sets shipped beside a tool's .proto, so a tool does not compile at start.

    payments/payments.proto
    payments/payments.binpb          the compiled FileDescriptorSet (imports and comments included)
    payments/payments.binpb.sha256   the SHA-256 of every source file it was built from

Compiling in process loads protoc (grpcio-tools) and protovalidate's descriptors and takes
0.1-0.3 s of CPU at every start; reading the shipped set takes neither. A shipped set is used
only while every source it lists still has the recorded digest; otherwise (or when there is
none) `load_or_compile` compiles the .proto as before and says so in a log line.
`write_descriptor_set` builds both files (`make proto` runs it for the example tools;
`make proto-check` fails when one is out of date).

Recorded sources are the files of the set found on the include path — the tool's own .proto
files and the agentmesh protos (`agentmesh/v1/tool_options.proto`) — by their import name;
the well-known types and `buf/validate/validate.proto` come with the installed libraries.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from agentmesh.kit.protos import proto_include_dir

log = logging.getLogger(__name__)

SET_SUFFIX = ".binpb"
DIGEST_SUFFIX = ".binpb.sha256"
_HEADER = "# the sources of the descriptor set beside this file (SHA-256, import name)"


@dataclass(frozen=True)
class ShippedSet:
    """Where the pre-built set of one .proto lives."""

    proto: Path

    @property
    def set_path(self) -> Path:
        return self.proto.with_suffix(SET_SUFFIX)

    @property
    def digest_path(self) -> Path:
        return self.proto.with_suffix(DIGEST_SUFFIX)


def search_path(proto: Path, include_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """Where the sources of `proto` are looked up, as the compiler looks them up."""
    includes = [Path(d).resolve() for d in include_dirs]
    if not any(proto.is_relative_to(d) for d in includes):
        includes.append(proto.parent)
    return [*includes, proto_include_dir()]


def import_name(proto: Path, path: Sequence[Path]) -> str:
    """The name `proto` is compiled under: relative to the first include directory holding it."""
    for directory in path:
        if proto.is_relative_to(directory):
            return proto.relative_to(directory).as_posix()
    return proto.name


def _find(name: str, path: Sequence[Path]) -> Path | None:
    for directory in path:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def source_digests(fds: descriptor_pb2.FileDescriptorSet, path: Sequence[Path]) -> dict[str, str]:
    """Import name → SHA-256 of each file of the set found on `path`."""
    digests = {}
    for file in fds.file:
        found = _find(file.name, path)
        if found is not None:
            digests[file.name] = hashlib.sha256(found.read_bytes()).hexdigest()
    return digests


def render_digests(digests: dict[str, str]) -> str:
    return "\n".join([_HEADER, *(f"{digest}  {name}" for name, digest in sorted(digests.items()))]) + "\n"


def parse_digests(text: str) -> dict[str, str]:
    digests = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise ValueError(f"not a digest line: {line!r}")
        digests[name] = digest
    return digests


def stale_reason(proto: Path, include_dirs: Sequence[str | Path] = ()) -> str | None:
    """Why the shipped set of `proto` cannot be used (None: it is current)."""
    shipped = ShippedSet(proto)
    if not shipped.set_path.is_file():
        return f"there is no {shipped.set_path.name}"
    if not shipped.digest_path.is_file():
        return f"there is no {shipped.digest_path.name}"
    try:
        recorded = parse_digests(shipped.digest_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{shipped.digest_path.name} is unreadable: {exc}"
    path = search_path(proto, include_dirs)
    name = import_name(proto, path)
    if name not in recorded:
        return f"{shipped.digest_path.name} does not list {name}"
    for name, digest in sorted(recorded.items()):
        found = _find(name, path)
        if found is None:
            return f"{name} is not on the include path"
        if hashlib.sha256(found.read_bytes()).hexdigest() != digest:
            return f"{name} changed since the set was built"
    return None


def load_shipped(
    proto: Path, include_dirs: Sequence[str | Path] = ()
) -> descriptor_pb2.FileDescriptorSet | None:
    """The shipped set of `proto` if it is current, else None (logged)."""
    reason = stale_reason(proto, include_dirs)
    if reason is None:
        try:
            return descriptor_pb2.FileDescriptorSet.FromString(ShippedSet(proto).set_path.read_bytes())
        except (OSError, DecodeError) as exc:
            reason = f"{ShippedSet(proto).set_path.name} does not load: {exc}"
    if ShippedSet(proto).set_path.exists():
        log.warning(
            "the descriptor set beside the .proto is out of date: compiling the .proto at start instead",
            extra={"proto": str(proto), "reason": reason},
        )
    else:
        log.info(
            "no descriptor set beside the .proto: compiling it at start (ship one to start faster "
            "and lighter: tool_registry.descriptor_files.write_descriptor_set)",
            extra={"proto": str(proto)},
        )
    return None


def load_or_compile(
    proto: str | Path, include_dirs: Sequence[str | Path] = ()
) -> descriptor_pb2.FileDescriptorSet:
    """The shipped descriptor set of `proto` when it is current; else compile `proto` in process."""
    path = Path(proto).resolve()
    shipped = load_shipped(path, include_dirs)
    if shipped is not None:
        return shipped
    from tool_registry.protoc import compile_protos  # protoc + protovalidate: only when compiling

    return compile_protos([path], include_dirs)


def build_descriptor_set(proto: str | Path, include_dirs: Sequence[str | Path] = ()) -> tuple[bytes, str]:
    """(serialized set, digest file text) of `proto`, as `write_descriptor_set` writes them."""
    from tool_registry.protoc import compile_protos

    path = Path(proto).resolve()
    fds = compile_protos([path], include_dirs)
    digests = source_digests(fds, search_path(path, include_dirs))
    return fds.SerializeToString(deterministic=True), render_digests(digests)


def write_descriptor_set(proto: str | Path, include_dirs: Sequence[str | Path] = ()) -> ShippedSet:
    """Compile `proto` and write its set and digests beside it (`<name>.binpb`, `<name>.binpb.sha256`)."""
    shipped = ShippedSet(Path(proto).resolve())
    data, digests = build_descriptor_set(shipped.proto, include_dirs)
    shipped.set_path.write_bytes(data)
    shipped.digest_path.write_text(digests)
    return shipped

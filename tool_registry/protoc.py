"""Compile .proto files in-process (grpcio-tools) into a self-contained FileDescriptorSet.

The include path always holds, besides the caller's directories:

- the agentmesh protos (`agentmesh/v1/tool_options.proto` for the tool option),
- the well-known types shipped with grpcio-tools,
- `buf/validate/validate.proto`, taken from the descriptor embedded in the
  protovalidate wheel and fed to protoc with `--descriptor_set_in`, so tool
  protos can use protovalidate rules without fetching anything.

Compiler errors become one INVALID_ARGUMENT carrying protoc's messages.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.kit.protos import proto_include_dir, well_known_include_dir
from agentmesh.v1 import errors_pb2

VALIDATE_PROTO = "buf/validate/validate.proto"
_stderr_lock = threading.Lock()


@functools.cache
def validate_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """buf/validate/validate.proto (from the protovalidate wheel) with the well-known files it imports."""
    from protovalidate._gen.buf.validate import validate_pb

    validate = descriptor_pb2.FileDescriptorProto.FromString(validate_pb._DESC.proto.to_binary())
    files = []
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files.append(proto)
    return descriptor_pb2.FileDescriptorSet(file=[*files, validate])


@functools.cache
def _validate_set_bytes() -> bytes:
    return validate_descriptor_set().SerializeToString()


class ProtoCompileError(InvalidArgument):
    """protoc refused the input; `message` holds its diagnostics."""


def compile_protos(
    files: Sequence[Path | str],
    include_dirs: Sequence[Path | str] = (),
    *,
    source_info: bool = True,
) -> descriptor_pb2.FileDescriptorSet:
    """Compile `files` (and everything they import) into one FileDescriptorSet."""
    paths = [Path(f).resolve() for f in files]
    for path in paths:
        if not path.is_file():
            raise ProtoCompileError(
                f"{path}: no such file",
                reason=errors_pb2.ERROR_REASON_INVALID_SCHEMA,
                violations=[FieldViolation("file", f"{path} does not exist")],
            )
    includes = [Path(d).resolve() for d in include_dirs]
    for path in paths:  # each file's own directory, unless an include already covers it
        if not any(_is_relative_to(path, d) for d in includes):
            includes.append(path.parent)
    relative = [str(_relative_to_include(path, includes)) for path in paths]
    # Everything protoc reads or writes lives in this one directory, removed when the compile ends
    # (the validate descriptor set too: it used to outlive the process, one directory per compile).
    with tempfile.TemporaryDirectory(prefix="agentmesh-protoc-") as tmp:
        out = Path(tmp) / "out.binpb"
        validate_set = Path(tmp) / "buf-validate.binpb"
        validate_set.write_bytes(_validate_set_bytes())
        args = [
            "grpc_tools.protoc",
            *(f"--proto_path={d}" for d in includes),
            f"--proto_path={proto_include_dir()}",
            f"--proto_path={well_known_include_dir()}",
            f"--descriptor_set_in={validate_set}",
            "--include_imports",
            f"--descriptor_set_out={out}",
        ]
        if source_info:
            args.append("--include_source_info")
        code, diagnostics = _run_protoc([*args, *relative])
        if code != 0 or not out.exists():
            raise ProtoCompileError(
                "protoc failed:\n" + (diagnostics.strip() or f"exit code {code}"),
                reason=errors_pb2.ERROR_REASON_INVALID_SCHEMA,
            )
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _is_relative_to(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
    except ValueError:
        return False
    return True


def _relative_to_include(path: Path, includes: Sequence[Path]) -> Path:
    for directory in includes:
        if _is_relative_to(path, directory):
            return path.relative_to(directory)
    return Path(path.name)


def _run_protoc(args: list[str]) -> tuple[int, str]:
    """Run protoc in this process, capturing what it prints on file descriptor 2."""
    # protoc's extension (~7 MB) loads at the first compile: agents and tools built from
    # generated modules never compile.
    from grpc_tools import protoc

    with _stderr_lock, tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        try:
            os.dup2(captured.fileno(), 2)
            code = protoc.main(args)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        return code, captured.read().decode(errors="replace")

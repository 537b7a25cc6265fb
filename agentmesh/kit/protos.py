"""Where the public .proto files live (for `agentmesh proto-path` and in-process compiles)."""

from __future__ import annotations

from pathlib import Path

import grpc_tools

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the agentmesh package


def proto_include_dir() -> Path:
    """Directory holding `agentmesh/v1/*.proto` (tool_options.proto among them).

    In an installed wheel the files ship as `agentmesh/_proto`; in a source
    checkout (editable install, tests) they are the repository's `proto/`.
    """
    shipped = _PACKAGE_DIR / "_proto"
    if (shipped / "agentmesh" / "v1" / "tool_options.proto").exists():
        return shipped
    source = _PACKAGE_DIR.parent / "proto"
    if (source / "agentmesh" / "v1" / "tool_options.proto").exists():
        return source
    raise FileNotFoundError("agentmesh .proto files not found: the installation is incomplete")


def well_known_include_dir() -> Path:
    """google/protobuf/*.proto as shipped with grpcio-tools."""
    return Path(grpc_tools.__file__).resolve().parent / "_proto"

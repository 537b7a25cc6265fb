"""Contract checks on the public API: lint, documentation, AIP shape, drift."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
BUF = str(Path(sysconfig.get_path("scripts")) / "buf")

# FileDescriptorProto / DescriptorProto field numbers used in SourceCodeInfo paths.
MESSAGE, ENUM, SERVICE = 4, 5, 6
FIELD, NESTED, NESTED_ENUM, ONEOF = 2, 3, 4, 8
ENUM_VALUE, METHOD = 2, 2


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path_factory.mktemp("buf") / "image.binpb"
    subprocess.run([BUF, "build", "-o", str(out)], cwd=ROOT / "proto", check=True)
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _api_files(image: descriptor_pb2.FileDescriptorSet) -> list[descriptor_pb2.FileDescriptorProto]:
    files = [f for f in image.file if f.name.startswith("agentmesh/v1/")]
    assert len(files) >= 6
    return files


def _elements(file: descriptor_pb2.FileDescriptorProto):  # type: ignore[no-untyped-def]
    """(path, display name) for every message, field, oneof, enum, value, service and method."""

    def message(msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str):  # type: ignore[no-untyped-def]
        name = f"{prefix}{msg.name}"
        yield path, name
        for i, field in enumerate(msg.field):
            yield (*path, FIELD, i), f"{name}.{field.name}"
        for i, oneof in enumerate(msg.oneof_decl):
            yield (*path, ONEOF, i), f"{name}.{oneof.name} (oneof)"
        for i, nested in enumerate(msg.nested_type):
            if not nested.options.map_entry:
                yield from message(nested, (*path, NESTED, i), f"{name}.")
        for i, enum in enumerate(msg.enum_type):
            yield from enum_elements(enum, (*path, NESTED_ENUM, i), f"{name}.")

    def enum_elements(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str):  # type: ignore[no-untyped-def]
        yield path, f"{prefix}{enum.name}"
        for i, value in enumerate(enum.value):
            yield (*path, ENUM_VALUE, i), f"{prefix}{enum.name}.{value.name}"

    for i, msg in enumerate(file.message_type):
        yield from message(msg, (MESSAGE, i), "")
    for i, enum in enumerate(file.enum_type):
        yield from enum_elements(enum, (ENUM, i), "")
    for i, service in enumerate(file.service):
        yield (SERVICE, i), service.name
        for j, method in enumerate(service.method):
            yield (SERVICE, i, METHOD, j), f"{service.name}.{method.name}"


def test_buf_lint_is_clean() -> None:
    result = subprocess.run([BUF, "lint"], cwd=ROOT / "proto", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_element_is_documented(image: descriptor_pb2.FileDescriptorSet) -> None:
    undocumented = []
    for file in _api_files(image):
        comments = {
            tuple(loc.path): loc.leading_comments.strip() or loc.trailing_comments.strip()
            for loc in file.source_code_info.location
        }
        for path, name in _elements(file):
            if not comments.get(path):
                undocumented.append(f"{file.name}: {name}")
    assert not undocumented, "add a comment to:\n" + "\n".join(undocumented)


def test_enums_start_with_unspecified_zero(image: descriptor_pb2.FileDescriptorSet) -> None:
    for file in _api_files(image):
        enums = list(file.enum_type) + [e for m in file.message_type for e in m.enum_type]
        for enum in enums:
            first = enum.value[0]
            assert first.number == 0 and first.name.endswith("_UNSPECIFIED"), enum.name


def test_every_rpc_has_its_own_request_message(image: descriptor_pb2.FileDescriptorSet) -> None:
    for file in _api_files(image):
        for service in file.service:
            assert service.name.endswith("Service")
            for method in service.method:
                assert method.input_type == f".agentmesh.v1.{method.name}Request", method.name


def test_list_methods_are_paged(image: descriptor_pb2.FileDescriptorSet) -> None:
    messages = {m.name: m for f in _api_files(image) for m in f.message_type}
    for name, message in messages.items():
        if name.startswith("List") and name.endswith("Request"):
            fields = {f.name for f in message.field}
            assert {"page_size", "page_token"} <= fields, name
            response = messages[name.replace("Request", "Response")]
            assert "next_page_token" in {f.name for f in response.field}, name


def test_generated_code_matches_protos() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_tool_option_extension_is_registered() -> None:
    from agentmesh.v1 import tool_options_pb2

    extension = tool_options_pb2.tool
    assert extension.full_name == "agentmesh.v1.tool"
    assert extension.containing_type.full_name == "google.protobuf.MethodOptions"
    assert extension.number == 51805

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tool_registry.protoc import compile_protos

PROTOS = Path(__file__).resolve().parents[2] / "fixtures" / "protos"


@pytest.fixture(scope="session")
def rich_set() -> descriptor_pb2.FileDescriptorSet:
    return compile_protos([PROTOS / "rich" / "v1" / "rich.proto"], [PROTOS])


@pytest.fixture(scope="session")
def shop_set() -> descriptor_pb2.FileDescriptorSet:
    return compile_protos([PROTOS / "shop" / "v1" / "inventory.proto"], [PROTOS])

"""Fetch a live server's descriptors through gRPC server reflection.

`fetch_descriptor_set(channel)` asks the server for its services, then for the
file defining each (and, transitively, every import it does not have yet),
and returns one self-contained FileDescriptorSet, ready for
`load_tool_schema`. Used by `agentmesh tools register --from-reflection` (and
later by Kubernetes discovery). Servers built with the agentmesh kit have
reflection on; the tool option travels inside the method options.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentmesh.kit.errors import FailedPrecondition, from_rpc_error

_SKIPPED = ("grpc.reflection.", "grpc.health.")


class _Session:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self.call = stub.ServerReflectionInfo(timeout=timeout)

    async def ask(
        self, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        await self.call.write(request)
        response = await self.call.read()
        if response is grpc.aio.EOF:
            raise FailedPrecondition("the server closed its reflection stream")
        if response.HasField("error_response"):
            error = response.error_response
            raise FailedPrecondition(f"reflection error {error.error_code}: {error.error_message}")
        return response


async def fetch_descriptor_set(
    channel: grpc.aio.Channel, services: Sequence[str] = (), *, timeout: float = 10.0
) -> tuple[descriptor_pb2.FileDescriptorSet, list[str]]:
    """(descriptor set, service names) of the server behind `channel`.

    With `services` empty, every service except reflection and health is fetched.
    """
    session = _Session(channel, timeout)
    try:
        names = list(services)
        if not names:
            listed = await session.ask(reflection_pb2.ServerReflectionRequest(list_services=""))
            names = [s.name for s in listed.list_services_response.service if not s.name.startswith(_SKIPPED)]
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        pending: list[str] = []

        def take(response: reflection_pb2.ServerReflectionResponse) -> None:
            for raw in response.file_descriptor_response.file_descriptor_proto:
                file = descriptor_pb2.FileDescriptorProto.FromString(raw)
                if file.name not in files:
                    files[file.name] = file
                    pending.extend(d for d in file.dependency if d not in files)

        for name in names:
            take(await session.ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)))
        while pending:
            dependency = pending.pop()
            if dependency not in files:
                take(await session.ask(reflection_pb2.ServerReflectionRequest(file_by_filename=dependency)))
        await session.call.done_writing()
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None
    finally:
        session.call.cancel()
    return descriptor_pb2.FileDescriptorSet(file=list(files.values())), names

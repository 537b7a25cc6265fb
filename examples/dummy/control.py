"""The training dummy's operator controls: its Configure and Stats RPCs, found through the registry.

Configure is not a tool (the model never sees it): it is the dummy's own gRPC method, called
on the endpoint the registry binds to `dummy_stats`, with the message types of the schema the
registry holds. Used by the demo and by `agentmesh chaos set|reset`.

    resolver = ToolResolver(create_channel(registry, control_plane=True))
    await configure(resolver, {"unavailable_rate": 0.3, "latency": "0.2s"})
    print(await stats(resolver))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from agentmesh.kit.errors import FailedPrecondition, from_rpc_error
from tool_registry.resolver import ToolResolver

SERVICE = "dummy.v1.Dummy"
# The metadata a control call carries, by the method's full name (`dummy.v1.Dummy/Configure`): with
# auth on, a token whose audience is that method (the tool SDK checks it like a tool's).
Credentials = Callable[[str], Sequence[tuple[str, str]]]
# The dummy's tool the control calls ride on (its endpoint and schema).
ANCHOR_TOOL = "dummy_stats"


async def _call(
    resolver: ToolResolver,
    method: str,
    request_type: str,
    response_type: str,
    body: dict[str, Any],
    credentials: Credentials | None,
) -> dict[str, Any]:
    tool = await resolver.resolve(ANCHOR_TOOL)
    if tool.channel is None:
        raise FailedPrecondition("the training dummy has no endpoint bound in the registry")
    pool = tool.schema.pool
    request_class = tool.schema.message_class(pool.FindMessageTypeByName(request_type))
    response_class = tool.schema.message_class(pool.FindMessageTypeByName(response_type))
    request = json_format.ParseDict(body, request_class())
    call = tool.channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    try:
        metadata = list(credentials(f"{SERVICE}/{method}")) if credentials is not None else []
        response: Message = await call(request, timeout=5, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None
    # Counters print even at zero; a behaviour lists only what is set.
    every_field = response_type != "dummy.v1.Behaviour"
    document: dict[str, Any] = json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=every_field
    )
    return document


async def configure(
    resolver: ToolResolver, behaviour: dict[str, Any], credentials: Credentials | None = None
) -> dict[str, Any]:
    """Replace the dummy's behaviour (fields of dummy.v1.Behaviour); the behaviour now in force."""
    return await _call(
        resolver, "Configure", "dummy.v1.Behaviour", "dummy.v1.Behaviour", behaviour, credentials
    )


async def stats(resolver: ToolResolver, credentials: Credentials | None = None) -> dict[str, Any]:
    """The dummy's counters (calls, effects, injected failures) and its behaviour (what is set)."""
    document = await _call(
        resolver, "Stats", "dummy.v1.StatsRequest", "dummy.v1.StatsResponse", {}, credentials
    )
    behaviour = document.get("behaviour", {})
    document["behaviour"] = {
        key: value for key, value in behaviour.items() if value not in (0, 0.0, "0", False)
    }
    return document

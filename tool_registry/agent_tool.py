"""The virtual tool `agent_<domain>` that stands for an agent in the directory.

Calling it is calling `agentmesh.v1.AgentService/Run` on the agent's endpoint:
the input is a RunRequest, the output a RunResponse. It is derived from the
stored AgentCard on every read (never stored itself), so it always follows the
card:

- version `1.0.0`: its schema is the public API's RunRequest/RunResponse,
  which only changes compatibly within agentmesh.v1. A breaking change to Run
  would come with agentmesh.v2 and a new major here;
- side effect KEYED: the caller must set `RunRequest.request_id` from its
  idempotency key (task id + step), so a retried delegation returns the same
  task instead of running twice;
- timeout: the card's cap on task deadlines (else its default deadline),
  because delegated runs outlast the 10 s default of ordinary tools;
- description, endpoint and required scopes come from the card.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2

from agentmesh.v1 import agent_service_pb2, tool_options_pb2, tool_pb2
from tool_registry import names
from tool_registry.content import content_digest
from tool_registry.descriptors import file_descriptor_set_of

AGENT_TOOL_VERSION = "1.0.0"
AGENT_METHOD = "agentmesh.v1.AgentService/Run"
AGENT_TAG = "agent"


@functools.cache
def agent_schema() -> descriptor_pb2.FileDescriptorSet:
    return file_descriptor_set_of(agent_service_pb2.DESCRIPTOR)


@functools.cache
def agent_schema_bytes() -> bytes:
    return agent_schema().SerializeToString(deterministic=True)


def agent_tool(card: agent_service_pb2.AgentCard, *, with_schema: bool = False) -> tool_pb2.ToolSpec:
    spec = tool_pb2.ToolSpec(
        name=names.agent_tool_name(card.domain),
        version=AGENT_TOOL_VERSION,
        description=card.description,
        method=AGENT_METHOD,
        endpoint=card.endpoint,
        side_effect=tool_options_pb2.SIDE_EFFECT_KEYED,
        required_scopes=card.required_scopes,
        tags=[AGENT_TAG],
        kind=tool_pb2.TOOL_KIND_AGENT,
        input_type=agent_service_pb2.RunRequest.DESCRIPTOR.full_name,
        output_type=agent_service_pb2.RunResponse.DESCRIPTOR.full_name,
        revision=card.revision,
        registered_by=card.registered_by or f"agent:{card.domain}",
    )
    deadline = card.caps.deadline if card.caps.HasField("deadline") else card.default_limits.deadline
    if deadline.seconds or deadline.nanos:
        spec.timeout.CopyFrom(deadline)
    if card.HasField("update_time"):
        spec.create_time.CopyFrom(card.update_time)
        spec.update_time.CopyFrom(card.update_time)
    spec.content_digest = content_digest(spec, agent_schema())
    if with_schema:
        spec.file_descriptor_set = agent_schema_bytes()
    return spec

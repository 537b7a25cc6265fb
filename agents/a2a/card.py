"""The A2A agent card (served at /.well-known/agent-card.json), built from the native card.

It declares both bindings an agent serves on its one gRPC port — the A2A v1.0
gRPC binding (`lf.a2a.v1.A2AService`) and the native `agentmesh.v1.AgentService`
— with a bare `host:port` URL, and the bearer-token security scheme: A2A callers
send the same JWTs as native callers. The native card stays available through
GetAgentCard.
"""

from __future__ import annotations

from typing import Any

from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format

from agentmesh.v1 import agent_service_pb2

PROTOCOL_VERSION = "1.0"
GRPC_BINDING = "GRPC"
NATIVE_BINDING = "agentmesh.v1.AgentService"
BEARER = "bearer"
TEXT_MODES = ["text/plain", "application/json"]
OUTPUT_MODES = ["text/plain", "application/json", "application/octet-stream"]


def a2a_card(card: agent_service_pb2.AgentCard) -> a2a.AgentCard:
    out = a2a.AgentCard(
        name=card.display_name or card.domain,
        description=card.description,
        version=card.version,
        supported_interfaces=[
            a2a.AgentInterface(
                url=card.endpoint, protocol_binding=GRPC_BINDING, protocol_version=PROTOCOL_VERSION
            ),
            a2a.AgentInterface(url=card.endpoint, protocol_binding=NATIVE_BINDING, protocol_version="v1"),
        ],
        capabilities=a2a.AgentCapabilities(
            streaming=True, push_notifications=False, extended_agent_card=False
        ),
        default_input_modes=TEXT_MODES,
        default_output_modes=OUTPUT_MODES,
        skills=[
            a2a.AgentSkill(
                id=skill.skill_id,
                name=skill.name,
                description=skill.description,
                tags=list(skill.tags) or [card.domain],
                examples=list(skill.examples),
            )
            for skill in card.skills
        ],
    )
    out.provider.organization = "agentmesh"
    out.provider.url = card.http_url
    scheme = out.security_schemes[BEARER]
    scheme.http_auth_security_scheme.scheme = "Bearer"
    scheme.http_auth_security_scheme.bearer_format = "JWT"
    scheme.http_auth_security_scheme.description = (
        "A JWT from the mesh issuer or a trusted IdP (aud: this domain or 'agentmesh')"
    )
    requirement = out.security_requirements.add()
    requirement.schemes[BEARER].list.extend(card.required_scopes)
    return out


def a2a_card_json(card: agent_service_pb2.AgentCard) -> dict[str, Any]:
    """The A2A card in its JSON form (camelCase field names, as A2A clients read it)."""
    return json_format.MessageToDict(a2a_card(card))

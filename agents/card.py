"""The agent card: what a domain spec tells the world (GetAgentCard, the registry's directory)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from agentmesh import __version__
from agentmesh.v1 import agent_service_pb2
from agents.limits import Budget, duration
from agents.spec import DomainSpec


def build_card(spec: DomainSpec, *, endpoint: str, http_url: str, model: str) -> agent_service_pb2.AgentCard:
    return agent_service_pb2.AgentCard(
        domain=spec.slug,
        display_name=spec.display_name,
        description=spec.description,
        version=__version__,
        skills=[
            agent_service_pb2.AgentSkill(
                skill_id=skill.id,
                name=skill.name,
                description=skill.description,
                tags=list(skill.tags),
                examples=list(skill.examples),
            )
            for skill in spec.skills
        ],
        tools=[
            agent_service_pb2.AgentToolRef(name=tool.name, version_range=tool.version) for tool in spec.tools
        ],
        caps=Budget.from_limit_set(spec.caps).to_proto(),
        default_limits=Budget.from_limit_set(spec.default_limits).to_proto(),
        required_scopes=list(spec.required_scopes),
        endpoint=endpoint,
        http_url=http_url,
        model=model,
        max_delegation_depth=spec.max_delegation_depth,
        approval_timeout=duration(spec.approval_timeout),
    )


def card_json(card: agent_service_pb2.AgentCard) -> dict[str, Any]:
    """The card as served at /.well-known/agent-card.json (protobuf JSON mapping)."""
    return json_format.MessageToDict(card, preserving_proto_field_name=False)

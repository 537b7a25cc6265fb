"""The A2A agent card parses into the a2a-sdk's AgentCard without loss."""

from __future__ import annotations

from pathlib import Path

from a2a.client.card_resolver import parse_agent_card
from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format

from agents.a2a.card import GRPC_BINDING, a2a_card, a2a_card_json
from agents.card import build_card
from agents.spec import load_spec

DOMAINS = Path(__file__).resolve().parents[3] / "agents" / "domains"


def test_the_card_round_trips_through_the_sdk_type() -> None:
    spec = load_spec(DOMAINS / "refunds.yaml")
    native = build_card(spec, endpoint="refunds.mesh.svc:50061", http_url="http://refunds:51061", model="m")
    document = a2a_card_json(native)
    # The SDK's own parser (it ignores unknown fields, so compare with the strict parse too).
    assert parse_agent_card(document) == a2a_card(native)
    assert json_format.ParseDict(document, a2a.AgentCard()) == a2a_card(native)
    assert document["supportedInterfaces"][0] == {
        "url": "refunds.mesh.svc:50061",
        "protocolBinding": GRPC_BINDING,
        "protocolVersion": "1.0",
    }
    assert document["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert document["capabilities"]["streaming"] is True
    assert [s["id"] for s in document["skills"]] == [skill.id for skill in spec.skills]
    assert document["name"] == spec.display_name and document["description"] == spec.description

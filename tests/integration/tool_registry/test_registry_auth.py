"""Registry write authorization over real gRPC, real Redis and real tokens (issue "Security", item 5).

Writes need `registry:write`; a tool name or agent domain belongs to whoever first
wrote it, another service's write is refused and changes nothing; `registry:admin`
writes and transfers any; every write records `registered_by`; reads need a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from agentmesh.kit.auth import MeshAuth, TokenIssuer, generate_issuer_key, mesh_auth
from agentmesh.kit.testing import local_settings
from agentmesh.v1 import agent_service_pb2
from agentmesh.v1 import tool_registry_service_pb2 as rs
from tests.integration.tool_registry.test_registry_service import expect, spec, tool_set
from tests.support.registry import Registry, registry_at, snapshot

pytestmark = pytest.mark.integration


@dataclass
class Secured:
    registry: Registry
    auth: MeshAuth
    issuer: TokenIssuer

    def service(self, name: str, *scopes: str) -> tuple[tuple[str, str], ...]:
        token = self.issuer.service_token(name, scopes=scopes or ("registry:write",))
        return (("authorization", f"Bearer {token}"),)

    def user(self, user: str, *scopes: str) -> tuple[tuple[str, str], ...]:
        token = self.issuer.user_token(user=user, tenant="acme", scopes=scopes)
        return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def secured(redis_url: str, tmp_path: Path) -> AsyncIterator[Secured]:
    key = generate_issuer_key()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(key.pem())
    auth = mesh_auth(local_settings(signing_key=key_file))
    assert auth.issuer is not None and not auth.insecure
    async with registry_at(redis_url, auth=auth) as registry:
        yield Secured(registry, auth, auth.issuer)


def _card(domain: str, endpoint: str) -> agent_service_pb2.AgentCard:
    return agent_service_pb2.AgentCard(domain=domain, description="Refunds.", endpoint=endpoint)


async def test_unauthenticated_and_forged_writes_are_refused_and_change_nothing(
    secured: Secured, tmp_path: Path
) -> None:
    stub, redis = secured.registry.stub, secured.registry.redis
    request = rs.RegisterToolRequest(tool=spec(tool_set(tmp_path), endpoint="attacker:1"))
    before = await snapshot(redis)
    error = await expect(stub.RegisterTool(request), grpc.StatusCode.UNAUTHENTICATED)
    assert error.metadata.get("cause") == "missing"  # type: ignore[attr-defined]
    # A token signed by a key the mesh does not trust: UNAUTHENTICATED, not a write.
    forged = TokenIssuer([generate_issuer_key()]).service_token("payments")
    await expect(
        stub.RegisterTool(request, metadata=(("authorization", f"Bearer {forged}"),)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    for rpc, message in (
        (stub.BindToolEndpoint, rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0")),
        (stub.DeprecateTool, rs.DeprecateToolRequest(name="payments_refund", message="gone")),
        (stub.RegisterAgent, rs.RegisterAgentRequest(card=_card("refunds", "attacker:1"))),
        (stub.ListTools, rs.ListToolsRequest()),  # reads need a token too
    ):
        await expect(rpc(message), grpc.StatusCode.UNAUTHENTICATED)  # type: ignore[operator]
    assert await snapshot(redis) == before
    # Without registry:write (a user token): PERMISSION_DENIED naming the scope.
    denied = await expect(
        stub.RegisterTool(request, metadata=secured.user("alice", "payments:refund")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert denied.metadata["scope"] == "registry:write"  # type: ignore[attr-defined]
    assert await snapshot(redis) == before
    # Any valid token reads.
    listed = await stub.ListTools(rs.ListToolsRequest(), metadata=secured.user("alice"))
    assert list(listed.tools) == []


async def test_a_tool_name_belongs_to_the_service_that_first_registered_it(
    secured: Secured, tmp_path: Path
) -> None:
    stub, redis = secured.registry.stub, secured.registry.redis
    payments, evil = secured.service("payments"), secured.service("evil")
    first = await stub.RegisterTool(
        rs.RegisterToolRequest(tool=spec(tool_set(tmp_path), endpoint="payments:50072")), metadata=payments
    )
    assert first.outcome == rs.REGISTRATION_OUTCOME_CREATED
    assert first.tool.registered_by == "service:payments"
    before = await snapshot(redis)
    # Another service: a new version pointing elsewhere, a rebind, a re-register with its endpoint,
    # a deprecation. All PERMISSION_DENIED, and the binding is unchanged.
    attempts = (
        stub.RegisterTool(
            rs.RegisterToolRequest(tool=spec(tool_set(tmp_path, "1.0.1"), endpoint="attacker:1")),
            metadata=evil,
        ),
        stub.RegisterTool(
            rs.RegisterToolRequest(tool=spec(tool_set(tmp_path), endpoint="attacker:1")), metadata=evil
        ),
        stub.BindToolEndpoint(
            rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0", endpoint="attacker:1"),
            metadata=evil,
        ),
        stub.DeprecateTool(
            rs.DeprecateToolRequest(name="payments_refund", message="mine now"), metadata=evil
        ),
    )
    for attempt in attempts:
        error = await expect(attempt, grpc.StatusCode.PERMISSION_DENIED)
        assert error.metadata["owner"] == "service:payments"  # type: ignore[attr-defined]
        assert "attacker" not in str(error)
    assert await snapshot(redis) == before
    got = await stub.GetTool(rs.GetToolRequest(name="payments_refund", version="^1.0"), metadata=evil)
    assert (got.version, got.endpoint, got.deprecated) == ("1.0.0", "payments:50072", False)
    # Its owner writes on; every write records the writer.
    bound = await stub.BindToolEndpoint(
        rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0", endpoint="payments-2:50072"),
        metadata=payments,
    )
    assert (bound.endpoint, bound.registered_by) == ("payments-2:50072", "service:payments")
    second = await stub.RegisterTool(
        rs.RegisterToolRequest(tool=spec(tool_set(tmp_path, "1.0.1"), endpoint="payments:50072")),
        metadata=payments,
    )
    assert second.tool.registered_by == "service:payments"


async def test_admin_overrides_and_transfers_a_name(secured: Secured, tmp_path: Path) -> None:
    stub = secured.registry.stub
    payments, billing = secured.service("payments"), secured.service("billing")
    admin = secured.user("ops", "registry:write", "registry:admin")
    await stub.RegisterTool(
        rs.RegisterToolRequest(tool=spec(tool_set(tmp_path), endpoint="payments:1")), metadata=payments
    )
    # Transfer needs registry:admin, even for the owner.
    denied = await expect(
        stub.BindToolEndpoint(
            rs.BindToolEndpointRequest(
                name="payments_refund", version="1.0.0", transfer_to="service:billing"
            ),
            metadata=payments,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert denied.metadata["scope"] == "registry:admin"  # type: ignore[attr-defined]
    moved = await stub.BindToolEndpoint(
        rs.BindToolEndpointRequest(
            name="payments_refund", version="1.0.0", endpoint="billing:1", transfer_to="service:billing"
        ),
        metadata=admin,
    )
    assert (moved.endpoint, moved.registered_by) == ("billing:1", "ops")
    await expect(
        stub.BindToolEndpoint(
            rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0", endpoint="payments:1"),
            metadata=payments,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    rebound = await stub.BindToolEndpoint(
        rs.BindToolEndpointRequest(name="payments_refund", version="1.0.0", endpoint="billing:2"),
        metadata=billing,
    )
    assert rebound.registered_by == "service:billing"


async def test_an_agent_card_belongs_to_its_first_writer(secured: Secured) -> None:
    stub, redis = secured.registry.stub, secured.registry.redis
    refunds, evil = secured.service("refunds"), secured.service("evil")
    card = await stub.RegisterAgent(
        rs.RegisterAgentRequest(card=_card("refunds", "refunds:50061")), metadata=refunds
    )
    assert card.registered_by == "service:refunds"
    virtual = await stub.GetTool(rs.GetToolRequest(name="agent_refunds"), metadata=evil)
    assert virtual.registered_by == "service:refunds"
    before = await snapshot(redis)
    await expect(
        stub.RegisterAgent(rs.RegisterAgentRequest(card=_card("refunds", "attacker:1")), metadata=evil),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert await snapshot(redis) == before
    again = await stub.RegisterAgent(
        rs.RegisterAgentRequest(card=_card("refunds", "refunds-2:50061")), metadata=refunds
    )
    assert again.endpoint == "refunds-2:50061"


async def test_concurrent_first_registrations_of_one_name_have_one_owner(
    secured: Secured, tmp_path: Path
) -> None:
    stub = secured.registry.stub
    services = [f"svc{i}" for i in range(6)]
    data = [tool_set(tmp_path, f"1.0.{i}") for i in range(len(services))]

    async def register(i: int) -> str:
        try:
            reply = await stub.RegisterTool(
                rs.RegisterToolRequest(tool=spec(data[i], endpoint=f"{services[i]}:1")),
                metadata=secured.service(services[i]),
            )
        except grpc.aio.AioRpcError as exc:
            return f"refused:{exc.code().name}"
        return reply.tool.registered_by

    outcomes = await asyncio.gather(*(register(i) for i in range(len(services))))
    winners = {w for w in outcomes if not w.startswith("refused:")}
    assert len(winners) == 1 and outcomes.count("refused:PERMISSION_DENIED") == len(services) - 1, outcomes
    listed = await stub.ListTools(rs.ListToolsRequest(all_versions=True), metadata=secured.service("reader"))
    assert {t.registered_by for t in listed.tools} == winners

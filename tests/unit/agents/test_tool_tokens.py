"""The tokens the agent sends with its tool calls: reused per (tool, caller, scopes) while fresh,
never across users, tenants, tools or scope sets, and minted per call for an approved call
(bound to its task step and request). Verified with the real verifier a tool runs."""

from __future__ import annotations

import time

import grpc
import pytest

from agentmesh.kit.auth import Principal, TokenIssuer, TokenVerifier, TrustedKeys, generate_issuer_key
from agentmesh.kit.auth.principal import arguments_digest
from agentmesh.kit.errors import Unauthenticated
from agentmesh.v1 import tool_pb2
from agents.caller import Caller
from agents.machine import ToolInvocation, ToolOffer
from agents.model.types import ToolCall
from agents.spec import parse_spec
from agents.tools import RegistryToolBox
from tool_registry.invoke import ToolInvoker
from tool_registry.resolver import ToolResolver

KEY = generate_issuer_key()
VERIFIER = TokenVerifier(TrustedKeys(issuer_keys=[KEY]))
ALICE = Caller(tenant="acme", user="alice", scopes=frozenset({"payments:refund", "crm:read"}))
SPEC = parse_spec(
    {
        "slug": "refunds",
        "display_name": "Refunds",
        "description": "R.",
        "system_prompt": "R.",
        "tools": [{"name": "payments_refund"}, {"name": "crm_lookup"}],
    }
)


def tool(name: str, *scopes: str) -> tool_pb2.ToolSpec:
    return tool_pb2.ToolSpec(name=name, version="1.0.0", required_scopes=list(scopes))


def invocation(key: str = "t-1:3", approval: str = "") -> ToolInvocation:
    call = ToolCall(call_id="c", name="payments_refund", raw_arguments="{}", arguments={})
    offer = ToolOffer(name="payments_refund", version="1.0.0", definition={})
    return ToolInvocation(call=call, offer=offer, index=0, idempotency_key=key, approval=approval)


@pytest.fixture
async def box() -> RegistryToolBox:
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never called: only the token path runs
    return RegistryToolBox(ToolResolver(channel), ToolInvoker(), SPEC, issuer=TokenIssuer([KEY]))


def mint(
    box: RegistryToolBox, caller: Caller, spec: tool_pb2.ToolSpec, inv: ToolInvocation | None = None
) -> str:
    inv = inv or invocation()
    task_id, _, step = inv.idempotency_key.rpartition(":")
    request = tool_pb2.ToolSpec(name="the request sent")
    return box._minter(inv, caller, task_id, int(step))(spec, request)


async def claims(token: str, audience: str) -> Principal:
    return await VERIFIER.verify(token, audiences=(audience,))


async def test_the_same_caller_and_tool_get_one_token_for_many_calls(box: RegistryToolBox) -> None:
    refund = tool("payments_refund", "payments:refund")
    first = mint(box, ALICE, refund)
    assert mint(box, ALICE, refund, invocation("t-2:7")) == first  # another task and step: same token
    verified = await claims(first, "payments_refund")
    assert (verified.subject, verified.tenant, verified.scopes) == ("alice", "acme", {"payments:refund"})
    assert verified.actor == "agent:refunds" and verified.approval is None
    assert verified.expires_at - time.time() <= 300


async def test_never_shared_across_users_tenants_tools_or_scopes(box: RegistryToolBox) -> None:
    refund = tool("payments_refund", "payments:refund")
    alice = mint(box, ALICE, refund)
    bob = mint(box, Caller(tenant="acme", user="bob", scopes=ALICE.scopes), refund)
    other_tenant = mint(box, Caller(tenant="globex", user="alice", scopes=ALICE.scopes), refund)
    fewer_scopes = mint(box, Caller(tenant="acme", user="alice", scopes=frozenset({"crm:read"})), refund)
    crm = mint(box, ALICE, tool("crm_lookup", "crm:read"))
    notes = mint(box, ALICE, tool("crm_notes", "crm:read"))  # the same scopes, another tool
    assert len({alice, bob, other_tenant, fewer_scopes, crm, notes}) == 6
    assert (await claims(bob, "payments_refund")).subject == "bob"
    assert (await claims(other_tenant, "payments_refund")).tenant == "globex"
    assert (await claims(fewer_scopes, "payments_refund")).scopes == frozenset()
    crm_principal = await claims(crm, "crm_lookup")
    assert crm_principal.scopes == {"crm:read"}
    assert (await claims(notes, "crm_notes")).audience == ("crm_notes",)
    for token, elsewhere in ((crm, "payments_refund"), (crm, "crm_notes"), (notes, "crm_lookup")):
        with pytest.raises(Unauthenticated, match="not for this service"):
            await claims(token, elsewhere)


async def test_an_approved_call_gets_its_own_token_bound_to_its_step(
    box: RegistryToolBox,
) -> None:
    refund = tool("payments_refund", "payments:refund")
    reused = mint(box, ALICE, refund)
    approved = mint(box, ALICE, refund, invocation("t-1:3", approval="act-1"))
    again = mint(box, ALICE, refund, invocation("t-1:3", approval="act-1"))
    assert len({reused, approved, again}) == 3  # a fresh jti every time, never the reused token
    principal = await claims(approved, "payments_refund")
    assert principal.approval is not None
    assert (principal.task_id, principal.step) == ("t-1", 3)
    assert principal.approval.arguments_sha256 == arguments_digest(tool_pb2.ToolSpec(name="the request sent"))

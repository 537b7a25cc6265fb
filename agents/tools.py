"""The runner's tools: the domain's allowed tools, resolved from the registry and invoked.

`RegistryToolBox` adapts the tool layer (tool_registry.resolver.ToolResolver,
tool_registry.invoke.ToolInvoker) to the runner:

- `offers`: each tool of the spec resolved by name and version range (cached by
  the resolver, kept current by WatchTools); its function definition is the
  registry's JSON Schema of the request. A tool that cannot be resolved right
  now is left out (the model cannot call what it does not see; a call to it
  is DENIED). Agents (`agent_<slug>`) are offered with one parameter,
  `instruction`: the runtime fills the rest of the RunRequest (its request_id
  is the step's idempotency key, so a retried delegation returns the same task).
- `invoke`: arguments → validated request → generic unary call with the
  remaining deadline, retries by side-effect class, idempotency key
  `<task id>:<step>`. Each call carries a tool token (DESIGN.md "Identity"):
  for a tool, `aud` = the tool name, the caller's scopes ∩ the tool's required
  scopes, at most 5 minutes; it is reused for the same (tool, tenant, user,
  scopes, agent) while less than half its lifetime has passed
  (`agentmesh.kit.auth.ReusedToolTokens`: one signature here and one
  verification at the tool instead of one per call). After a human approved,
  the token is minted for that one call, with the `approval` claim bound to
  the task, step and the digest of the very request sent; for an
  agent (`agent_<slug>`), a delegation token (`aud` = its domain, `act` =
  this agent, depth + 1). A tool whose required scopes the caller lacks is
  refused here, before anything is sent, and the model sees "not permitted:
  needs <scope>". The invoker's structured
  result becomes the runner's `ToolObservation` (the observation the model sees is
  rendered by agents.observations); a delegation's answer is cut down to what
  the calling model needs (state, final answer, stop reason).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from agentmesh.kit.auth import Approval, ReusedToolTokens, TokenIssuer, arguments_digest
from agentmesh.kit.errors import AgentmeshError
from agentmesh.v1 import task_pb2, tool_pb2
from agents.actions import ToolInvocation, ToolOffer
from agents.caller import Caller
from agents.observations import ToolObservation, Violation, delegation_result
from agents.spec import DomainSpec
from memory.rate_limits import RateLimiter
from tool_registry.invoke import CallContext, ResolvedTool, ToolInvoker, ToolResult, limiter_gate
from tool_registry.jsonschema import function_definition
from tool_registry.resolver import ToolResolver

log = logging.getLogger(__name__)

RETRYABLE_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"})
AGENT_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "instruction": {
            "type": "string",
            "minLength": 1,
            "maxLength": 32768,
            "description": "What the other agent should do, in natural language, with every detail it needs.",
        }
    },
    "required": ["instruction"],
    "additionalProperties": False,
}


def offer_of(tool: ResolvedTool) -> ToolOffer:
    spec = tool.spec
    is_agent = spec.kind == tool_pb2.TOOL_KIND_AGENT
    if is_agent:
        definition = function_definition(spec.name, spec.description, AGENT_PARAMETERS)
    else:
        schema = json.loads(spec.input_schema_json) if spec.input_schema_json else {"type": "object"}
        definition = function_definition(spec.name, spec.description, schema)
    return ToolOffer(
        name=spec.name,
        version=spec.version,
        definition=definition,
        requires_approval=spec.requires_approval,
        is_agent=is_agent,
        side_effect=spec.side_effect,
    )


ARTIFACT_TYPE = task_pb2.Artifact.DESCRIPTOR.full_name
# How deep artifacts are looked for in a response (RunResponse.task.artifacts is two levels down).
ARTIFACT_DEPTH = 3
MAX_TOOL_ARTIFACTS = 16


def tool_artifacts(tool: str, response: Message | None) -> tuple[task_pb2.ArtifactUpdate, ...]:
    """The artifacts in a tool's response: every field of type agentmesh.v1.Artifact (singular or
    repeated, at most ARTIFACT_DEPTH levels down; a delegated agent's task's artifacts among them).
    Ids are prefixed with the tool's name, so two tools' artifacts never replace each other."""
    found: list[Message] = []

    def walk(message: Message, depth: int) -> None:
        for descriptor, value in message.ListFields():
            kind = descriptor.message_type
            if kind is None or kind.GetOptions().map_entry or len(found) >= MAX_TOOL_ARTIFACTS:
                continue
            items = list(value) if descriptor.is_repeated else [value]
            if kind.full_name == ARTIFACT_TYPE:
                found.extend(items)
            elif depth < ARTIFACT_DEPTH:
                for item in items:
                    walk(item, depth + 1)

    if response is not None:
        walk(response, 1)
    updates = []
    for position, item in enumerate(found[:MAX_TOOL_ARTIFACTS]):
        artifact = task_pb2.Artifact.FromString(item.SerializeToString())
        artifact.artifact_id = f"{tool}.{artifact.artifact_id or position + 1}"[:128]
        updates.append(task_pb2.ArtifactUpdate(artifact=artifact, last_chunk=True))
    return tuple(updates)


def runner_result(result: ToolResult, *, is_agent: bool) -> ToolObservation:
    error = result.error
    response: Any = result.response
    if is_agent and isinstance(response, Mapping):
        response = delegation_result(response)
    return ToolObservation(
        outcome=int(result.outcome),  # type: ignore[arg-type]
        result=response,
        status_code=result.status_code,
        reason=result.reason,
        message=error.message if error is not None else "",
        violations=tuple(Violation(v.field, v.description) for v in result.violations),
        attempts=result.attempts,
        version=result.version,
        retryable=result.status_code in RETRYABLE_CODES,
        metadata=dict(error.metadata) if error is not None else {},
        artifacts=tool_artifacts(result.tool, result.message) if result.ok else (),
    )


class RegistryToolBox:
    def __init__(
        self,
        resolver: ToolResolver,
        invoker: ToolInvoker,
        spec: DomainSpec,
        *,
        issuer: TokenIssuer | None = None,
    ) -> None:
        self.resolver = resolver
        self.invoker = invoker
        self.versions = {tool.name: tool.version for tool in spec.tools}
        # Compensating tools (agents.compensation) are called through the same path, never offered.
        for tool in spec.tools:
            if tool.compensation is not None:
                self.versions.setdefault(tool.compensation.tool, tool.compensation.version)
        self.domain = spec.slug
        # The mesh issuer mints the calls' tokens; None only with auth off (insecure mode).
        self.issuer = issuer
        self.tokens = ReusedToolTokens(issuer) if issuer is not None else None

    @classmethod
    def create(
        cls,
        resolver: ToolResolver,
        spec: DomainSpec,
        limiter: RateLimiter | None = None,
        *,
        issuer: TokenIssuer | None = None,
    ) -> RegistryToolBox:
        """With the tools' own rate limits applied through memory's limiter (waiting within the deadline)."""
        gate = limiter_gate(limiter) if limiter is not None else None
        return cls(resolver, ToolInvoker(rate_limit=gate), spec, issuer=issuer)

    async def offers(self, spec: DomainSpec, caller: Caller) -> list[ToolOffer]:
        async def one(name: str, version: str) -> ToolOffer | None:
            try:
                return offer_of(await self.resolver.resolve(name, version))
            except AgentmeshError as exc:
                log.warning(
                    "tool %s (%s) is not available: %s",
                    name,
                    version,
                    exc.message,
                    extra={"reason": exc.reason},
                )
                return None

        found = await asyncio.gather(*(one(tool.name, tool.version) for tool in spec.tools))
        return [offer for offer in found if offer is not None]

    async def invoke(self, invocation: ToolInvocation, *, caller: Caller, timeout: float) -> ToolObservation:
        name = invocation.call.name
        try:
            tool = await self.resolver.resolve(name, self.versions.get(name, "latest"))
        except AgentmeshError as exc:
            return ToolObservation(
                outcome=task_pb2.TOOL_OUTCOME_ERROR,
                status_code=exc.code.name,
                reason=exc.reason,
                message=f"the tool could not be resolved: {exc.message}",
                attempts=0,
                retryable=exc.code.name in RETRYABLE_CODES,
            )
        is_agent = tool.spec.kind == tool_pb2.TOOL_KIND_AGENT
        task_id, _, step_text = invocation.idempotency_key.rpartition(":")
        step = int(step_text)
        secured = caller.authenticated and self.issuer is not None
        call = CallContext(
            task_id=task_id,
            step=step,
            deadline=time.time() + timeout,
            approval=invocation.approval or None,
            tenant=caller.tenant,
            user=caller.user,
            # With auth on, the caller's scopes decide before anything is sent (DENIED otherwise).
            granted_scopes=caller.scopes if caller.authenticated else None,
            call_id=invocation.call.call_id,
            mint=self._minter(invocation, caller, task_id, step) if secured else None,
            metadata=tuple(caller.delegation_metadata()) if is_agent and not secured else (),
        )
        result = await self.invoker.invoke(tool, invocation.call.arguments, call)
        return runner_result(result, is_agent=is_agent)

    def _minter(
        self, invocation: ToolInvocation, caller: Caller, task_id: str, step: int
    ) -> Callable[[tool_pb2.ToolSpec, Message], str]:
        issuer, tokens = self.issuer, self.tokens
        assert issuer is not None and tokens is not None
        principal = caller.principal()

        def mint(spec: tool_pb2.ToolSpec, request: Message) -> str:
            if spec.kind == tool_pb2.TOOL_KIND_AGENT:
                return issuer.delegation_token(
                    domain=agent_domain(spec.name),
                    principal=principal,
                    scopes=caller.scopes,
                    actor=self.domain,
                )
            scopes = caller.scopes & frozenset(spec.required_scopes)
            if not invocation.approval:
                return tokens.token(tool=spec.name, principal=principal, scopes=scopes, actor=self.domain)
            # An approved call's token binds this task step and this very request: never reused.
            approval = Approval(
                action_id=invocation.approval,
                task_id=task_id,
                step=step,
                arguments_sha256=arguments_digest(request),
                approver=caller.approver,
            )
            return issuer.tool_token(
                tool=spec.name,
                principal=principal,
                scopes=scopes,
                actor=self.domain,
                task_id=task_id,
                step=step,
                approval=approval,
            )

        return mint


def agent_domain(tool_name: str) -> str:
    """The domain slug an `agent_<slug with - as _>` tool stands for."""
    return tool_name.removeprefix("agent_").replace("_", "-")

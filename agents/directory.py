"""Registering the agent's card in the registry's directory, so others can delegate to it.

At start the agent calls RegisterAgent with its card (advertised address from
AGENTMESH_ADVERTISE_ADDR); if the registry is not up yet it keeps trying in the
background with capped, jittered backoff, without delaying SERVING. The
registry then exposes the agent as the virtual tool `agent_<slug>`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
from tenacity import AsyncRetrying, retry_if_exception

from agentmesh.kit.errors import AgentmeshError, from_rpc_error
from agentmesh.kit.retry import Backoff
from agentmesh.v1 import agent_service_pb2, tool_registry_service_pb2, tool_registry_service_pb2_grpc

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 10.0
_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, AgentmeshError) and exc.code not in _PERMANENT


async def register_card(
    channel: grpc.aio.Channel, card: agent_service_pb2.AgentCard, metadata: Sequence[tuple[str, str]] = ()
) -> agent_service_pb2.AgentCard:
    stub = tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel)
    try:
        stored: agent_service_pb2.AgentCard = await stub.RegisterAgent(
            tool_registry_service_pb2.RegisterAgentRequest(card=card),
            metadata=list(metadata),
            timeout=CALL_TIMEOUT_S,
        )
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None
    return stored


async def keep_registered(
    channel: grpc.aio.Channel,
    card: agent_service_pb2.AgentCard,
    registered: asyncio.Event,
    metadata: Sequence[tuple[str, str]] = (),
) -> None:
    """Register until it works (transient failures are retried forever); sets `registered`."""
    attempt = 0
    try:
        async for attempt_state in AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=Backoff(initial_s=0.1, max_s=MAX_BACKOFF_S).wait,
            reraise=True,
        ):
            attempt = attempt_state.retry_state.attempt_number
            with attempt_state:
                if attempt > 1:
                    log.info("registering the agent card again", extra={"attempt": attempt})
                stored = await register_card(channel, card, metadata)
    except AgentmeshError as exc:
        log.error(
            "the registry refused the agent card: %s",
            exc.message,
            extra={"domain": card.domain, "reason": exc.reason},
        )
        return
    registered.set()
    log.info(
        "agent card registered",
        extra={
            "domain": card.domain,
            "endpoint": card.endpoint,
            "revision": stored.revision,
            "attempts": attempt,
        },
    )

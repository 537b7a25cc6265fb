"""The A2A v1.0 gRPC binding of a real agent process, called through the a2a-sdk's own stubs and parser.

One task model, two protocols: a task sent over A2A is the mesh task the native API reads.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
import pytest
from a2a.client.card_resolver import parse_agent_card
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from agentmesh.v1 import agent_service_pb2 as pb
from agentmesh.v1 import task_pb2
from tests.integration.agents.conftest import DOMAINS, AgentFactory
from tests.support.auth import authorized_channel, bearer

pytestmark = pytest.mark.integration

ORDER = (
    "Ship order ORD-12345: 2 x ABC-001 to Ada Lovelace, 12 Analytical Street, London, SW1A 1AA, GB; "
    "notify ada@example.com"
)
V1 = [("a2a-version", "1.0")]


def message(text: str, message_id: str, *, context: str = "ctx-a2a", task_id: str = "") -> a2a.Message:
    return a2a.Message(
        message_id=message_id,
        context_id=context,
        task_id=task_id,
        role=a2a.ROLE_USER,
        parts=[a2a.Part(text=text)] if text else [],
    )


def error_info(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, str]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return error.code(), info.domain, info.reason
    return error.code(), "", ""


async def test_a_message_is_a_mesh_task_on_both_protocols(example_tools: Any, agent: AgentFactory) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (process, native):
        channel = authorized_channel(f"127.0.0.1:{process.host.grpc_port}")
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        try:
            reply = await stub.SendMessage(
                a2a.SendMessageRequest(message=message(ORDER, "a2a-order-1")), metadata=V1, timeout=60
            )
            task = reply.task
            assert task.status.state == a2a.TASK_STATE_COMPLETED, task
            assert task.context_id == "ctx-a2a" and "fulfilled" in task.status.message.parts[0].text
            # The same task through the native API, and back through A2A.
            mesh = await native.GetTask(pb.GetTaskRequest(task_id=task.id))
            assert mesh.state == task_pb2.TASK_STATE_COMPLETED and mesh.session_id == "ctx-a2a"
            assert mesh.request_id == "a2a-order-1"
            again = await stub.GetTask(a2a.GetTaskRequest(id=task.id, history_length=1), metadata=V1)
            assert again.id == task.id and len(again.history) == 1
            listed = await stub.ListTasks(a2a.ListTasksRequest(context_id="ctx-a2a"), metadata=V1)
            assert task.id in [t.id for t in listed.tasks]
            # The same message sent again finds its task (the message id is the request id).
            repeat = await stub.SendMessage(
                a2a.SendMessageRequest(message=message(ORDER, "a2a-order-1")), metadata=V1, timeout=60
            )
            assert repeat.task.id == task.id and repeat.task.status.state == a2a.TASK_STATE_COMPLETED
            # A finished task cannot be canceled; an unknown one is not found; both in A2A's terms.
            with pytest.raises(grpc.aio.AioRpcError) as finished:
                await stub.CancelTask(a2a.CancelTaskRequest(id=task.id), metadata=V1)
            assert error_info(finished.value) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "a2a-protocol.org",
                "TASK_NOT_CANCELABLE",
            )
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.GetTask(a2a.GetTaskRequest(id="00000000-0000-4000-8000-000000000000"), metadata=V1)
            assert error_info(unknown.value) == (
                grpc.StatusCode.NOT_FOUND,
                "a2a-protocol.org",
                "TASK_NOT_FOUND",
            )
        finally:
            await channel.close()


async def test_streaming_ends_with_the_final_state(example_tools: Any, agent: AgentFactory) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (process, _native):
        channel = authorized_channel(f"127.0.0.1:{process.host.grpc_port}")
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        try:
            events = [
                event
                async for event in stub.SendStreamingMessage(
                    a2a.SendMessageRequest(message=message(ORDER, "a2a-stream-1")), metadata=V1, timeout=60
                )
            ]
        finally:
            await channel.close()
    assert events[0].HasField("task")
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert states[-1] == a2a.TASK_STATE_COMPLETED, states
    assert a2a.TASK_STATE_WORKING in states


@pytest.mark.parametrize(
    ("request_", "metadata", "expected"),
    [
        (
            a2a.SendMessageRequest(message=message("", "a2a-empty")),
            V1,
            (grpc.StatusCode.INVALID_ARGUMENT, "a2a-protocol.org", "INVALID_PARAMS"),
        ),
        (
            a2a.SendMessageRequest(message=message("hello", "a2a-old")),
            [],
            (grpc.StatusCode.UNIMPLEMENTED, "a2a-protocol.org", "VERSION_NOT_SUPPORTED"),
        ),
        (
            a2a.SendMessageRequest(message=message("hello", "a2a-v2")),
            [("a2a-version", "2.0")],
            (grpc.StatusCode.UNIMPLEMENTED, "a2a-protocol.org", "VERSION_NOT_SUPPORTED"),
        ),
    ],
)
async def test_bad_messages_get_the_a2a_status(
    example_tools: Any, agent: AgentFactory, request_: Any, metadata: Any, expected: Any
) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (process, _native):
        channel = authorized_channel(f"127.0.0.1:{process.host.grpc_port}")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await a2a_pb2_grpc.A2AServiceStub(channel).SendMessage(request_, metadata=metadata)
        finally:
            await channel.close()
    assert error_info(caught.value) == expected


async def test_push_notifications_are_not_offered_and_callers_need_a_token(
    example_tools: Any, agent: AgentFactory
) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (process, _native):
        target = f"127.0.0.1:{process.host.grpc_port}"
        channel = authorized_channel(target)
        anonymous = grpc.aio.insecure_channel(target)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as push:
                await a2a_pb2_grpc.A2AServiceStub(channel).CreateTaskPushNotificationConfig(
                    a2a.TaskPushNotificationConfig(), metadata=V1
                )
            assert error_info(push.value)[0::2] == (
                grpc.StatusCode.UNIMPLEMENTED,
                "PUSH_NOTIFICATION_NOT_SUPPORTED",
            )
            with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                await a2a_pb2_grpc.A2AServiceStub(anonymous).GetTask(a2a.GetTaskRequest(id="x"), metadata=V1)
            assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await channel.close()
            await anonymous.close()


async def test_the_a2a_card_parses_into_the_sdk_type(example_tools: Any, agent: AgentFactory) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (process, native):
        card = await native.GetAgentCard(pb.GetAgentCardRequest(), metadata=bearer())
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{process.host.http_port}/.well-known/agent-card.json") as response,
        ):
            document = await response.json()
    parsed = parse_agent_card(document)
    assert json_format.MessageToDict(parsed) == document
    assert parsed.supported_interfaces[0].url == card.endpoint
    assert parsed.supported_interfaces[0].protocol_binding == "GRPC"
    assert parsed.security_schemes["bearer"].http_auth_security_scheme.bearer_format == "JWT"

"""The A2A conformance scenarios, through the a2a-sdk's own high-level client over gRPC.

One real mesh per module (processes: the registry, the scripted model following
agents/scripts/conformance.yaml, the `conformance` agent from agents/domains/conformance.yaml);
the client resolves the agent card over HTTP and calls the A2A gRPC binding with the test
bearer token. The message id's prefix picks the scenario (`tck-artifact-text-…`).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from a2a.client import Client, ClientConfig, ClientFactory
from a2a.client.card_resolver import parse_agent_card
from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format

from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.v1 import agent_service_pb2 as pb
from agentmesh.v1 import agent_service_pb2_grpc, task_pb2
from tests.conftest import clean_redis_url
from tests.support.agent_mesh import Mesh
from tests.support.auth import authorized_channel, key_path

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "agents" / "domains" / "conformance.yaml"
# The conformance script (included for the conformance domain) plus a relay domain delegating to it.
SCRIPT = ROOT / "tests" / "fixtures" / "scripts" / "a2a-relay.yaml"
RELAY = ROOT / "tests" / "fixtures" / "domains" / "relay.yaml"
TERMINAL = {a2a.TASK_STATE_COMPLETED, a2a.TASK_STATE_FAILED, a2a.TASK_STATE_CANCELED, a2a.TASK_STATE_REJECTED}


@dataclass
class Conformance:
    mesh: Mesh
    card: a2a.AgentCard
    card_json: dict[str, object]
    blocking: Client
    streaming: Client
    native: agent_service_pb2_grpc.AgentServiceStub
    relay: agent_service_pb2_grpc.AgentServiceStub


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def conformance(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Conformance]:
    env = {
        "REDIS_URL": clean_redis_url(redis_server),
        "AGENTMESH_BIND_HOST": "127.0.0.1",
        "AGENTMESH_SIGNING_KEY": str(key_path()),
    }
    mesh = Mesh(logs=tmp_path_factory.mktemp("conformance-logs"), redis_url=env["REDIS_URL"], env=env)
    try:
        await mesh.start_registry()
        await mesh.start_model(SCRIPT)
        await mesh.start_agents([SPEC, RELAY])
        grpc_port = int(mesh.agents["conformance"].rsplit(":", 1)[1])
        base_url = f"http://127.0.0.1:{grpc_port + 1000}"
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base_url}/.well-known/agent-card.json") as card,
        ):
            card_json = await card.json()

        def factory(streaming: bool) -> ClientFactory:
            return ClientFactory(
                ClientConfig(
                    streaming=streaming,
                    supported_protocol_bindings=["GRPC"],
                    grpc_channel_factory=authorized_channel,
                )
            )

        # The clients resolve the card themselves, as any A2A caller would.
        blocking = await factory(False).create_from_url(base_url)
        streaming = await factory(True).create_from_url(base_url)
        channel = authorized_channel(mesh.agents["conformance"])
        relay_channel = authorized_channel(mesh.agents["relay"])
        try:
            yield Conformance(
                mesh,
                parse_agent_card(card_json),
                card_json,
                blocking,
                streaming,
                agent_service_pb2_grpc.AgentServiceStub(channel),
                agent_service_pb2_grpc.AgentServiceStub(relay_channel),
            )
        finally:
            await blocking.close()
            await streaming.close()
            await channel.close()
            await relay_channel.close()
    finally:
        mesh.stop()


def message(scenario: str, text: str = "Hello", *, task_id: str = "", context: str = "") -> a2a.Message:
    return a2a.Message(
        message_id=f"{scenario}-{uuid.uuid4().hex[:12]}",
        context_id=context or f"ctx-{uuid.uuid4().hex[:8]}",
        task_id=task_id,
        role=a2a.ROLE_USER,
        parts=[a2a.Part(text=text)],
    )


async def send(client: Client, msg: a2a.Message, **config: bool) -> list[a2a.StreamResponse]:
    request = a2a.SendMessageRequest(message=msg)
    for key, value in config.items():
        setattr(request.configuration, key, value)
    return [event async for event in client.send_message(request)]


async def blocking_task(c: Conformance, scenario: str) -> a2a.Task:
    (response,) = await send(c.blocking, message(scenario))
    assert response.HasField("task"), response
    return response.task


def conversation(history: Iterable[a2a.Message]) -> list[tuple[int, str]]:
    return [(m.role, "".join(p.text for p in m.parts)) for m in history]


def text_of(status: a2a.TaskStatus) -> str:
    return "".join(part.text for part in status.message.parts)


# -- the card --------------------------------------------------------------------------------


async def test_the_card_parses_into_the_sdk_type_without_loss(conformance: Conformance) -> None:
    assert json_format.MessageToDict(conformance.card) == conformance.card_json
    again = parse_agent_card(json_format.MessageToDict(conformance.card))
    assert again == conformance.card
    assert conformance.card.name and conformance.card.skills[0].id == "conformance"
    assert conformance.card.supported_interfaces[0].url == conformance.mesh.agents["conformance"]


# -- tasks -----------------------------------------------------------------------------------


async def test_complete_task(conformance: Conformance) -> None:
    task = await blocking_task(conformance, "tck-complete-task")
    assert task.status.state == a2a.TASK_STATE_COMPLETED
    assert text_of(task.status) == "Hello from TCK"
    assert not task.artifacts


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (
            "tck-artifact-text",
            {
                "artifactId": "text",
                "name": "greeting",
                "description": "A text artifact",
                "parts": [{"text": "Hello from TCK"}],
            },
        ),
        (
            "tck-artifact-file",
            {
                "artifactId": "file",
                "name": "hello-file",
                "parts": [
                    {
                        "raw": base64.b64encode(b"Hello from TCK").decode(),
                        "filename": "hello.txt",
                        "mediaType": "text/plain",
                    }
                ],
            },
        ),
        (
            "tck-artifact-file-url",
            {
                "artifactId": "file-url",
                "name": "hello-url",
                "parts": [
                    {
                        "url": "https://example.com/tck/hello.txt",
                        "filename": "hello.txt",
                        "mediaType": "text/plain",
                    }
                ],
            },
        ),
        (
            "tck-artifact-data",
            {
                "artifactId": "data",
                "name": "result",
                "parts": [{"data": {"greeting": "Hello from TCK", "count": 3.0, "ok": True}}],
            },
        ),
    ],
)
async def test_artifacts_on_both_protocols(conformance: Conformance, scenario: str, expected: object) -> None:
    task = await blocking_task(conformance, scenario)
    assert task.status.state == a2a.TASK_STATE_COMPLETED, task
    assert [json_format.MessageToDict(a) for a in task.artifacts] == [expected]
    # Stored with the task: GetTask on both protocols returns it.
    again = await conformance.blocking.get_task(a2a.GetTaskRequest(id=task.id))
    assert list(again.artifacts) == list(task.artifacts)
    native = await conformance.native.GetTask(pb.GetTaskRequest(task_id=task.id))
    assert [a.artifact_id for a in native.artifacts] == [expected["artifactId"]]  # type: ignore[index]
    # And on the native event stream, before the final status.
    events = [e async for e in conformance.native.WatchTask(pb.WatchTaskRequest(task_id=task.id))]
    kinds = [e.WhichOneof("event") for e in events]
    assert "artifact_update" in kinds
    assert kinds.index("artifact_update") < max(i for i, k in enumerate(kinds) if k == "status_update")


async def test_message_response_is_a_message_and_keeps_a_task_record(conformance: Conformance) -> None:
    msg = message("tck-message-response")
    (response,) = await send(conformance.blocking, msg)
    assert response.HasField("message"), response
    assert response.message.role == a2a.ROLE_AGENT
    assert [p.text for p in response.message.parts] == ["Hello from TCK"]
    assert not response.message.task_id
    listed = await conformance.native.ListTasks(pb.ListTasksRequest(session_id=msg.context_id))
    (record,) = [t for t in listed.tasks if t.request_id == msg.message_id]
    assert record.state == task_pb2.TASK_STATE_COMPLETED and record.final_answer == "Hello from TCK"


async def test_a_streamed_message_response_is_one_message_event(conformance: Conformance) -> None:
    # A2A v1.0: a stream whose first event is a Message ends after it (no task events).
    msg = message("tck-message-response")
    (event,) = await send(conformance.streaming, msg)
    assert event.WhichOneof("payload") == "message", event
    assert event.message.role == a2a.ROLE_AGENT and not event.message.task_id
    assert [p.text for p in event.message.parts] == ["Hello from TCK"]
    assert event.message.context_id == msg.context_id
    # The short-lived task record stays, as for the blocking call.
    listed = await conformance.native.ListTasks(pb.ListTasksRequest(session_id=msg.context_id))
    (record,) = [t for t in listed.tasks if t.request_id == msg.message_id]
    assert record.state == task_pb2.TASK_STATE_COMPLETED and record.final_answer == "Hello from TCK"


async def test_input_required_then_a_follow_up_resumes_the_task(conformance: Conformance) -> None:
    first = message("tck-input-required")
    (response,) = await send(conformance.blocking, first)
    task = response.task
    assert task.status.state == a2a.TASK_STATE_INPUT_REQUIRED, task
    assert text_of(task.status) == "Please provide more input."
    follow_up = message("tck-input-required", "Ada", task_id=task.id, context=first.context_id)
    (resumed,) = await send(conformance.blocking, follow_up)
    # A blocking follow-up answers once the resumed task settles.
    assert resumed.task.id == task.id
    assert resumed.task.status.state == a2a.TASK_STATE_COMPLETED, resumed
    assert text_of(resumed.task.status) == "Thank you: Ada"
    # GetTask agrees.
    again = await conformance.blocking.get_task(a2a.GetTaskRequest(id=task.id))
    assert again.status.state == a2a.TASK_STATE_COMPLETED
    # The history tells the whole exchange in order, from the stored steps: the question the agent
    # asked and the user's reply sit between the first message and the answer.
    exchange = [
        (a2a.ROLE_USER, "Hello"),
        (a2a.ROLE_AGENT, "Please provide more input."),
        (a2a.ROLE_USER, "Ada"),
        (a2a.ROLE_AGENT, "Thank you: Ada"),
    ]
    assert conversation(again.history) == exchange
    assert again.history[0].message_id == first.message_id
    assert again.history[2].message_id == follow_up.message_id  # the user's reply keeps its own id
    assert len({m.message_id for m in again.history}) == len(exchange)
    assert conversation(resumed.task.history) == exchange
    last_two = await conformance.blocking.get_task(a2a.GetTaskRequest(id=task.id, history_length=2))
    assert conversation(last_two.history) == exchange[-2:]
    # While it waited, the question was already the last message.
    assert conversation(task.history) == exchange[:2]
    listed = await conformance.blocking.list_tasks(a2a.ListTasksRequest(context_id=first.context_id))
    (row,) = [t for t in listed.tasks if t.id == task.id]
    assert conversation(row.history) == exchange


async def test_reject_task(conformance: Conformance) -> None:
    task = await blocking_task(conformance, "tck-reject-task")
    assert task.status.state == a2a.TASK_STATE_REJECTED, task
    assert text_of(task.status) == "This task is rejected."


# -- streams ---------------------------------------------------------------------------------


def states(events: list[a2a.StreamResponse]) -> list[int]:
    return [e.status_update.status.state for e in events if e.HasField("status_update")]


@pytest.mark.parametrize(
    "scenario", ["tck-stream-001", "tck-stream-002", "tck-stream-003", "tck-stream-ordering-001"]
)
async def test_streams_end_with_the_final_event(conformance: Conformance, scenario: str) -> None:
    events = await send(conformance.streaming, message(scenario))
    assert events[0].HasField("task")
    task_id = events[0].task.id
    assert all(
        (e.status_update.task_id if e.HasField("status_update") else e.task.id) == task_id for e in events
    )
    seen = states(events)
    assert seen[-1] == a2a.TASK_STATE_COMPLETED and events[-1].HasField("status_update"), events
    assert seen.index(a2a.TASK_STATE_WORKING) < seen.index(a2a.TASK_STATE_COMPLETED)
    assert text_of(events[-1].status_update.status) == "Hello from TCK"


async def test_stream_artifact_text_and_file(conformance: Conformance) -> None:
    for scenario, part in (
        ("tck-stream-artifact-text", a2a.Part(text="Hello from TCK")),
        (
            "tck-stream-artifact-file",
            a2a.Part(
                raw=b"\x00\x01\x02\x03\x04", filename="hello.bin", media_type="application/octet-stream"
            ),
        ),
    ):
        events = await send(conformance.streaming, message(scenario))
        kinds = [e.WhichOneof("payload") for e in events]
        artifact_at = kinds.index("artifact_update")
        assert a2a.TASK_STATE_WORKING in states(events[:artifact_at]), kinds
        assert kinds[artifact_at + 1 :] == ["status_update"], kinds
        update = events[artifact_at].artifact_update
        assert list(update.artifact.parts) == [part] and update.last_chunk and not update.append
        assert events[-1].status_update.status.state == a2a.TASK_STATE_COMPLETED


async def test_stream_artifact_chunked_in_order(conformance: Conformance) -> None:
    events = await send(conformance.streaming, message("tck-stream-artifact-chunked"))
    chunks = [e.artifact_update for e in events if e.HasField("artifact_update")]
    assert [(c.artifact.artifact_id, c.artifact.parts[0].text, c.append, c.last_chunk) for c in chunks] == [
        ("chunked", "Hello ", False, False),
        ("chunked", "from ", True, False),
        ("chunked", "TCK", True, True),
    ]
    assert events[-1].status_update.status.state == a2a.TASK_STATE_COMPLETED
    task = await conformance.blocking.get_task(a2a.GetTaskRequest(id=events[0].task.id))
    (artifact,) = task.artifacts
    assert [p.text for p in artifact.parts] == ["Hello ", "from ", "TCK"]


async def test_resubscribe_to_a_working_task(conformance: Conformance) -> None:
    (response,) = await send(
        conformance.blocking, message("test-resubscribe-message-id"), return_immediately=True
    )
    task = response.task
    assert task.status.state not in TERMINAL
    events = [e async for e in conformance.streaming.subscribe(a2a.SubscribeToTaskRequest(id=task.id))]
    assert events[0].task.id == task.id and events[0].task.status.state not in TERMINAL
    assert events[-1].status_update.status.state == a2a.TASK_STATE_COMPLETED, events
    assert text_of(events[-1].status_update.status) == "Hello from TCK"


# -- artifacts from tool results ----------------------------------------------------------------


async def test_a_delegated_agents_artifact_becomes_the_callers(conformance: Conformance) -> None:
    await conformance.mesh.wait_registered(agents=["conformance"])
    response = await conformance.relay.Run(pb.RunRequest(instruction="a label"), timeout=60)
    task = response.task
    assert task.state == task_pb2.TASK_STATE_COMPLETED, task
    assert task.final_answer == "The conformance agent says: made a label"
    (artifact,) = task.artifacts
    assert artifact.artifact_id == "agent_conformance.made" and artifact.name == "a label"
    file = artifact.parts[0].file
    assert (file.name, file.media_type, file.content) == ("made.txt", "text/plain", b"a label")
    # Saved with the delegation step: on the relay task's event stream before its final status.
    events = [e async for e in conformance.relay.WatchTask(pb.WatchTaskRequest(task_id=task.task_id))]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.index("artifact_update") < len(kinds) - 1 and kinds[-1] == "status_update"

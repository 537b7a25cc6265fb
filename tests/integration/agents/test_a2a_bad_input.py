"""Bad input on the A2A binding: each gets the status and ErrorInfo (domain `a2a-protocol.org`) the
A2A spec prescribes, never UNKNOWN or INTERNAL, and leaves no task behind.

One real agent process (auth on) serves every case; the cases run in one test so the agent starts
once, and a failure lists every case that answered wrongly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc

from agentmesh.v1 import agent_service_pb2 as pb
from tests.integration.agents.conftest import DOMAINS, AgentFactory
from tests.integration.agents.test_a2a import ORDER, V1, error_info, message
from tests.support.auth import authorized_channel

pytestmark = pytest.mark.integration

UNKNOWN = "00000000-0000-4000-8000-000000000000"
NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "a2a-protocol.org", "TASK_NOT_FOUND")
INVALID = (grpc.StatusCode.INVALID_ARGUMENT, "a2a-protocol.org", "INVALID_PARAMS")
NOT_CANCELABLE = (grpc.StatusCode.FAILED_PRECONDITION, "a2a-protocol.org", "TASK_NOT_CANCELABLE")
UNSUPPORTED = (grpc.StatusCode.FAILED_PRECONDITION, "a2a-protocol.org", "UNSUPPORTED_OPERATION")
VERSION = (grpc.StatusCode.UNIMPLEMENTED, "a2a-protocol.org", "VERSION_NOT_SUPPORTED")


async def first(stream: Any) -> Any:
    async for item in stream:
        return item
    return None


async def outcome(call: Callable[[], Awaitable[Any]]) -> tuple[grpc.StatusCode, str, str] | str:
    try:
        answer = await call()
    except grpc.aio.AioRpcError as error:
        return error_info(error)
    return f"answered: {str(answer)[:200]!r}"


async def test_bad_a2a_input_gets_the_spec_status(example_tools: Any, agent: AgentFactory) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (process, native):
        channel = authorized_channel(f"127.0.0.1:{process.host.grpc_port}")
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        try:
            done = await stub.SendMessage(
                a2a.SendMessageRequest(message=message(ORDER, "a2a-bad-done")), metadata=V1, timeout=60
            )
            finished = done.task.id
            assert done.task.status.state == a2a.TASK_STATE_COMPLETED, done
            before = await native.ListTasks(pb.ListTasksRequest(page_size=100))

            def send(msg: a2a.Message, **config: Any) -> Callable[[], Awaitable[Any]]:
                request = a2a.SendMessageRequest(
                    message=msg, configuration=a2a.SendMessageConfiguration(**config)
                )
                return lambda: stub.SendMessage(request, metadata=V1, timeout=30)

            cases: dict[str, tuple[Callable[[], Awaitable[Any]], tuple[grpc.StatusCode, str, str]]] = {
                # Unknown and malformed task ids.
                "GetTask unknown id": (
                    lambda: stub.GetTask(a2a.GetTaskRequest(id=UNKNOWN), metadata=V1),
                    NOT_FOUND,
                ),
                "CancelTask unknown id": (
                    lambda: stub.CancelTask(a2a.CancelTaskRequest(id=UNKNOWN), metadata=V1),
                    NOT_FOUND,
                ),
                "SubscribeToTask unknown id": (
                    lambda: first(stub.SubscribeToTask(a2a.SubscribeToTaskRequest(id=UNKNOWN), metadata=V1)),
                    NOT_FOUND,
                ),
                "SendMessage to an unknown task": (
                    send(message("more", "a2a-bad-unknown-task", task_id=UNKNOWN)),
                    NOT_FOUND,
                ),
                "GetTask empty id": (lambda: stub.GetTask(a2a.GetTaskRequest(id=""), metadata=V1), INVALID),
                "GetTask malformed id": (
                    lambda: stub.GetTask(a2a.GetTaskRequest(id="../../etc/passwd"), metadata=V1),
                    INVALID,
                ),
                "GetTask oversize id": (
                    lambda: stub.GetTask(a2a.GetTaskRequest(id="t" * 5000), metadata=V1),
                    INVALID,
                ),
                "CancelTask malformed id": (
                    lambda: stub.CancelTask(a2a.CancelTaskRequest(id="bad id!"), metadata=V1),
                    INVALID,
                ),
                # Finished tasks.
                "CancelTask finished": (
                    lambda: stub.CancelTask(a2a.CancelTaskRequest(id=finished), metadata=V1),
                    NOT_CANCELABLE,
                ),
                "SubscribeToTask finished": (
                    lambda: first(stub.SubscribeToTask(a2a.SubscribeToTaskRequest(id=finished), metadata=V1)),
                    UNSUPPORTED,
                ),
                "SendMessage follow-up to a finished task": (
                    send(message("more", "a2a-bad-follow-up", task_id=finished)),
                    UNSUPPORTED,
                ),
                # Messages.
                "SendMessage no parts": (send(message("", "a2a-bad-no-parts")), INVALID),
                "SendMessage empty text part": (
                    send(
                        a2a.Message(
                            message_id="a2a-bad-empty-text", role=a2a.ROLE_USER, parts=[a2a.Part(text="")]
                        )
                    ),
                    INVALID,
                ),
                "SendMessage part without content": (
                    send(
                        a2a.Message(message_id="a2a-bad-no-content", role=a2a.ROLE_USER, parts=[a2a.Part()])
                    ),
                    INVALID,
                ),
                "SendMessage oversize part": (
                    send(message("x" * (1024 * 1024 + 1), "a2a-bad-oversize")),
                    INVALID,
                ),
                "SendMessage oversize text": (send(message("x" * (40 * 1024), "a2a-bad-long-text")), INVALID),
                "SendMessage no message id": (send(message(ORDER, "")), INVALID),
                "SendMessage history_length < 0": (
                    send(message(ORDER, "a2a-bad-history"), history_length=-1),
                    INVALID,
                ),
                "SendStreamingMessage no parts": (
                    lambda: first(
                        stub.SendStreamingMessage(
                            a2a.SendMessageRequest(message=message("", "a2a-bad-stream")), metadata=V1
                        )
                    ),
                    INVALID,
                ),
                # Reading tasks.
                "GetTask history_length < 0": (
                    lambda: stub.GetTask(a2a.GetTaskRequest(id=finished, history_length=-1), metadata=V1),
                    INVALID,
                ),
                "ListTasks history_length < 0": (
                    lambda: stub.ListTasks(a2a.ListTasksRequest(history_length=-1), metadata=V1),
                    INVALID,
                ),
                "ListTasks page_size 0": (
                    lambda: stub.ListTasks(a2a.ListTasksRequest(page_size=0), metadata=V1),
                    INVALID,
                ),
                "ListTasks page_size -1": (
                    lambda: stub.ListTasks(a2a.ListTasksRequest(page_size=-1), metadata=V1),
                    INVALID,
                ),
                "ListTasks page_size 101": (
                    lambda: stub.ListTasks(a2a.ListTasksRequest(page_size=101), metadata=V1),
                    INVALID,
                ),
                "ListTasks malformed page token": (
                    lambda: stub.ListTasks(a2a.ListTasksRequest(page_token="%%not-a-token%%"), metadata=V1),
                    INVALID,
                ),
                # The kit's server edge refuses an undefined enum number in any request before a
                # servicer runs: INVALID_ARGUMENT with field violations, in the mesh's own terms.
                "ListTasks unknown status": (
                    lambda: stub.ListTasks(a2a.ListTasksRequest(status=99), metadata=V1),  # type: ignore[arg-type]
                    (grpc.StatusCode.INVALID_ARGUMENT, "agentmesh", "INVALID_REQUEST"),
                ),
                # The a2a-version header: missing means 0.3, which is not served; unknown majors neither.
                "GetTask without a2a-version": (
                    lambda: stub.GetTask(a2a.GetTaskRequest(id=finished)),
                    VERSION,
                ),
                "ListTasks a2a-version 0.3": (
                    lambda: stub.ListTasks(a2a.ListTasksRequest(), metadata=[("a2a-version", "0.3")]),
                    VERSION,
                ),
                "CancelTask a2a-version 2.0": (
                    lambda: stub.CancelTask(
                        a2a.CancelTaskRequest(id=finished), metadata=[("a2a-version", "2.0")]
                    ),
                    VERSION,
                ),
                "SubscribeToTask a2a-version garbage": (
                    lambda: first(
                        stub.SubscribeToTask(
                            a2a.SubscribeToTaskRequest(id=finished), metadata=[("a2a-version", "v1;drop")]
                        )
                    ),
                    VERSION,
                ),
                "SendStreamingMessage without a2a-version": (
                    lambda: first(
                        stub.SendStreamingMessage(a2a.SendMessageRequest(message=message(ORDER, "a2a-bad-v")))
                    ),
                    VERSION,
                ),
            }
            wrong = {}
            for name, (call, expected) in cases.items():
                got = await outcome(call)
                if got != expected:
                    wrong[name] = f"expected {expected}, got {got}"
            assert not wrong, "\n".join(f"{name}: {why}" for name, why in wrong.items())
            # Nothing refused left a task behind.
            after = await native.ListTasks(pb.ListTasksRequest(page_size=100))
            assert [t.task_id for t in after.tasks] == [t.task_id for t in before.tasks]
            # A version 1.x header of another minor is served.
            again = await stub.GetTask(a2a.GetTaskRequest(id=finished), metadata=[("a2a-version", "1.1")])
            assert again.id == finished
        finally:
            await channel.close()

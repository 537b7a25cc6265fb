"""The server bootstrap and edge against real grpc.aio servers on port 0."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentmesh.kit import metrics
from agentmesh.kit.errors import from_rpc_error
from agentmesh.kit.http import SideListener
from agentmesh.kit.testing import local_settings, running_host
from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc, task_pb2
from tests.support.sample_service import SECRET_TEXT, SERVICE, SampleAgent, registration

pytestmark = pytest.mark.integration


@pytest.fixture
def servicer() -> SampleAgent:
    return SampleAgent()


async def test_valid_request_is_served(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        response = await stub.Run(agent_service_pb2.RunRequest(instruction="ship order 42"))
    assert response.task.final_answer == "SHIP ORDER 42"


async def test_validation_error_is_invalid_argument_with_field_violations(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        request = agent_service_pb2.RunRequest(
            session_id="bad id!", limits=task_pb2.Limits(max_iterations=99)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Run(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(caught.value)
    assert error.reason == "INVALID_REQUEST"
    assert error.domain == "agentmesh"
    fields = {v.field: v for v in error.violations}
    assert set(fields) == {"instruction", "session_id", "limits.max_iterations"}
    assert fields["instruction"].description == "is required"
    assert "between 0 and 12" in fields["limits.max_iterations"].description


async def test_oversize_field_names_the_field(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Run(agent_service_pb2.RunRequest(instruction="x" * (32 * 1024 + 1)))
    error = from_rpc_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["instruction"]
    assert "32768" in error.violations[0].description


async def test_message_over_transport_limit_is_refused_without_reaching_handler(
    servicer: SampleAgent,
) -> None:
    settings = local_settings(max_message_bytes=64 * 1024)
    async with running_host([registration(servicer)], settings=settings) as (_, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Run(agent_service_pb2.RunRequest(instruction="x" * (128 * 1024)))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_unknown_enum_value_is_invalid_argument_naming_the_field(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        request = agent_service_pb2.ListTasksRequest(states=[task_pb2.TASK_STATE_WORKING, 42])  # type: ignore[list-item]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListTasks(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(caught.value)
    assert [v.field for v in error.violations] == ["states[1]"]
    assert "agentmesh.v1.TaskState" in error.violations[0].description
    assert servicer.entered == 0  # refused at the edge


async def test_domain_error_keeps_code_reason_and_metadata(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTask(agent_service_pb2.GetTaskRequest(task_id="t-9"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    error = from_rpc_error(caught.value)
    assert error.reason == "TASK_NOT_FOUND"
    assert error.metadata == {"task_id": "t-9"}


async def test_unexpected_exception_is_internal_without_leaking(
    servicer: SampleAgent, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitTask(agent_service_pb2.SubmitTaskRequest(instruction="x", request_id="r"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET_TEXT not in (caught.value.details() or "")
    assert "RuntimeError" not in (caught.value.details() or "")
    assert "Traceback" not in str(caught.value.trailing_metadata())
    error = from_rpc_error(caught.value)
    error_id = error.metadata["error_id"]
    assert error_id in (caught.value.details() or "")
    # The operator can still find what happened, by id, in the log.
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == error_id]
    assert logged and logged[0].exc_info is not None


async def test_streaming_error_after_items_keeps_its_status(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for event in stub.WatchTask(agent_service_pb2.WatchTaskRequest(task_id="fail")):
                received.append(event.event_id)
    assert received == ["0", "1", "2"]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _in_flight_gauge(service: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("agentmesh_rpc_in_flight", {"service": service})


async def test_in_flight_bound_answers_resource_exhausted_with_retry_info(servicer: SampleAgent) -> None:
    settings = local_settings(max_in_flight=2)
    async with running_host([registration(servicer)], settings=settings) as (host, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        blocked = [
            asyncio.ensure_future(stub.ListTasks(agent_service_pb2.ListTasksRequest())) for _ in range(2)
        ]
        while servicer.entered < 2:
            await asyncio.sleep(0.01)
        assert _in_flight_gauge("agentmesh.v1.AgentService") == 2
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListTasks(agent_service_pb2.ListTasksRequest())
        # Health and other services are never refused by the bound.
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            await health.Check(health_pb2.HealthCheckRequest())
        ).status == health_pb2.HealthCheckResponse.SERVING
        servicer.release.set()
        await asyncio.gather(*blocked)
        assert host.edge is not None and host.edge.in_flight == 0
        # The HPA's custom metric sees the burst end (it once stayed at its peak).
        assert _in_flight_gauge("agentmesh.v1.AgentService") == 0
    error = from_rpc_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "OVERLOADED"
    assert error.retry_after is not None and error.retry_after > 0


async def test_health_per_service_and_not_serving_on_shutdown(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (host, channel):
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE.full_name):
            response = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        # Watch the health stream while the server shuts down: NOT_SERVING arrives
        # before the server goes away.
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE.full_name))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        # A call in flight during shutdown still completes within the grace period.
        in_flight = asyncio.ensure_future(
            agent_service_pb2_grpc.AgentServiceStub(channel).ListTasks(agent_service_pb2.ListTasksRequest())
        )
        while servicer.entered < 1:
            await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(host.stop(grace=5))
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not host.is_serving()
        watch.cancel()  # a long-lived stream would otherwise hold the drain for the whole grace
        servicer.release.set()
        response = await in_flight
        assert isinstance(response, agent_service_pb2.ListTasksResponse)
        await stopping


async def test_reflection_lists_services_and_describes_the_api(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask(
            request: reflection_pb2.ServerReflectionRequest,
        ) -> reflection_pb2.ServerReflectionResponse:
            call = stub.ServerReflectionInfo(iter([request]))
            async for response in call:
                return response
            raise AssertionError("no reflection response")

        listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert {
            "agentmesh.v1.AgentService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names

        described = await ask(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="agentmesh.v1.AgentService")
        )
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in described.file_descriptor_response.file_descriptor_proto
        ]
        assert any(f.name == "agentmesh/v1/agent_service.proto" for f in files)


async def test_http_side_listener_serves_metrics_and_readiness(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (host, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        await stub.Run(agent_service_pb2.RunRequest(instruction="hello"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetTask(agent_service_pb2.GetTaskRequest(task_id="x"))
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{host.http_port}") as http:
            async with http.get("/metrics") as response:
                metrics_text = await response.text()
            for path in ("/readyz", "/healthz"):
                async with http.get(path) as response:
                    assert response.status == 200, path
    assert (
        'agentmesh_rpc_handled_total{code="OK",method="Run",service="agentmesh.v1.AgentService"}'
        in metrics_text
    )
    assert 'code="NOT_FOUND",method="GetTask"' in metrics_text
    assert "agentmesh_rpc_duration_seconds_bucket" in metrics_text


def _length_delimited(field: int, body: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(body)) + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _deep_struct_run_request(levels: int) -> bytes:
    """RunRequest{parts: [Part{data: Struct nested `levels` deep}]}, encoded by hand: the
    Python runtime itself refuses to build it (protobuf's recursion limit is 100 messages)."""
    struct = b""
    for _ in range(levels):  # Struct.fields["x"] = Value{struct_value: <inner>}
        entry = _length_delimited(1, b"x") + _length_delimited(2, _length_delimited(5, struct))
        struct = _length_delimited(1, entry)
    return _length_delimited(1, b"hi") + _length_delimited(2, _length_delimited(4, struct))


def _raw_run(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        "/agentmesh.v1.AgentService/Run",
        request_serializer=lambda data: data,
        response_deserializer=agent_service_pb2.RunResponse.FromString,
    )


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xff\xff\xff\xff", id="corrupt-bytes"),
        pytest.param(b"\x0a\x80\x80\x80\x80\x08abc", id="truncated-length"),
        pytest.param(_deep_struct_run_request(70), id="struct-70-deep"),
    ],
)
async def test_undecodable_request_is_invalid_argument_not_unknown(
    servicer: SampleAgent, payload: bytes
) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _raw_run(channel)(payload)
        # the service is still serving afterwards
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        assert (await stub.Run(agent_service_pb2.RunRequest(instruction="ok"))).task.final_answer == "OK"
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    error = from_rpc_error(caught.value)
    assert [v.field for v in error.violations] == ["request"]


async def test_undecodable_request_to_a_stream_is_invalid_argument(servicer: SampleAgent) -> None:
    async with running_host([registration(servicer)]) as (_, channel):
        watch = channel.unary_stream(
            "/agentmesh.v1.AgentService/WatchTask",
            request_serializer=lambda data: data,
            response_deserializer=task_pb2.TaskEvent.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in watch(b"\xff\xff\xff"):
                pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_http_listener_on_all_interfaces_answers_ipv4_and_ipv6() -> None:
    # asyncio binds "::" IPv6-only by default: Prometheus scraping a pod's IPv4 address got nothing.
    listener = SideListener("[::]", 0, ready=lambda: True)
    port = await listener.start()
    try:
        async with aiohttp.ClientSession() as session:
            for host in ("127.0.0.1", "[::1]"):
                async with session.get(f"http://{host}:{port}/healthz") as response:
                    assert response.status == 200, host
    finally:
        await listener.stop()

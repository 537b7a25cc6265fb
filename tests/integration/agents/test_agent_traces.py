"""One task's trace, recorded in memory over real parts: the caller's span → SubmitTask on the agent
→ the queue (Redis) → the worker's attempt → model calls → tool calls → the tool's server span, all
in one trace; and a failed call's server span carries the error status (the stock OTel server
interceptor leaves it unset for statuses sent with abort_with_status, as the kit's edge does)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentmesh.kit.span_files import otlp_json, parse_line, span_tree
from agentmesh.v1 import agent_service_pb2 as pb
from agentmesh.v1 import task_pb2
from tests.integration.agents.conftest import DOMAINS, AgentFactory
from tests.integration.agents.test_agent_service import ORDER
from tests.support.tracing import recording_spans

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recording_spans() as exporter:
        yield exporter


def _named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def _parent_chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span.name)
    return chain


async def test_one_trace_from_caller_through_queue_worker_model_and_tool(
    spans: InMemorySpanExporter, example_tools: Any, agent: AgentFactory
) -> None:
    caller = trace.get_tracer("test.caller")
    async with agent(DOMAINS / "fulfillment.yaml") as (_, stub):
        with caller.start_as_current_span("caller", kind=SpanKind.CLIENT) as root:
            submitted = await stub.SubmitTask(pb.SubmitTaskRequest(instruction=ORDER, request_id="traced-1"))
        events = [e async for e in stub.WatchTask(pb.WatchTaskRequest(task_id=submitted.task_id))]
    assert events[-1].status_update.state == task_pb2.TASK_STATE_COMPLETED
    trace_id = root.get_span_context().trace_id
    assert submitted.trace_id == f"{trace_id:032x}"

    finished = list(spans.get_finished_spans())
    ours = [s for s in finished if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in ours}
    submit = [
        s for s in ours if s.name == "/agentmesh.v1.AgentService/SubmitTask" and s.kind == SpanKind.SERVER
    ]
    attempt = _named(ours, "task.attempt")
    agent_span = _named(ours, "invoke_agent fulfillment")
    chats = _named(ours, "chat ")
    tool_servers = [s for s in ours if s.name.startswith("/inventory.v1.") and s.kind == SpanKind.SERVER]
    assert submit and attempt and agent_span and chats and tool_servers, sorted({s.name for s in ours})
    # Each link of the chain is a descendant of the one before it, across the queue hop.
    assert _parent_chain(submit[0], by_id)[-1] == "caller"  # through the client span
    assert attempt[0].attributes["agentmesh.task_id"] == submitted.task_id
    assert "caller" in _parent_chain(attempt[0], by_id)  # the worker joined the submitter's trace
    assert "task.attempt" in _parent_chain(agent_span[0], by_id)
    assert all("invoke_agent fulfillment" in _parent_chain(c, by_id) for c in chats)
    assert all("invoke_agent fulfillment" in _parent_chain(t, by_id) for t in tool_servers)
    # GenAI attributes where the conventions put them.
    assert chats[0].attributes["gen_ai.operation.name"] == "chat"
    assert chats[0].attributes["gen_ai.usage.input_tokens"] > 0
    tools = _named(ours, "execute_tool inventory_reserve")
    assert tools and tools[0].attributes["gen_ai.tool.name"] == "inventory_reserve"

    # The same spans survive the span file format (OTLP JSON lines) and form one tree there.
    records = parse_line(otlp_json(ours))
    assert {r.trace_id for r in records} == {f"{trace_id:032x}"}
    roots = span_tree(records)
    assert [r.name for r in roots] == ["caller"]


async def test_a_failed_call_marks_its_server_span_as_an_error(
    spans: InMemorySpanExporter, agent: AgentFactory
) -> None:
    async with agent(DOMAINS / "fulfillment.yaml") as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTask(pb.GetTaskRequest(task_id="not a task id"))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetTask(pb.GetTaskRequest(task_id="00000000-0000-4000-8000-000000000000"))
        await stub.GetAgentCard(pb.GetAgentCardRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    servers = [
        s
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.SERVER and s.name.startswith("/agentmesh.v1.AgentService/")
    ]
    failed = [s for s in servers if s.name.endswith("/GetTask")]
    assert len(failed) == 2
    for span, code in zip(failed, (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), strict=True):
        assert span.status.status_code == StatusCode.ERROR, span.name
        assert span.attributes["rpc.grpc.status_code"] == code.value[0]
        assert span.attributes["error.type"] == code.name
    ok = [s for s in servers if s.name.endswith("/GetAgentCard")]
    assert ok and ok[0].status.status_code == StatusCode.UNSET

"""Span files: OTLP/JSON lines written by the exporter, read back as a tree, printed by `agentmesh trace`."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.kit.span_files import SpanFileExporter, read_spans, span_tree, task_trace


def _record(directory: Path, service: str, task_id: str) -> tuple[str, str]:
    """A small trace written through the exporter: invoke_agent → chat, execute_tool (failed)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = SpanFileExporter(directory, service)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "invoke_agent refunds", attributes={"agentmesh.task_id": task_id}
    ) as root:
        with tracer.start_as_current_span("chat scripted") as chat:
            chat.set_attribute("gen_ai.usage.input_tokens", 340)
        with tracer.start_as_current_span("execute_tool payments_refund") as tool:
            tool.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
    with tracer.start_as_current_span("unrelated"):
        pass
    provider.shutdown()
    return f"{root.get_span_context().trace_id:032x}", str(exporter.path)


def test_lines_are_otlp_json_with_hex_ids(tmp_path: Path) -> None:
    trace_id, path = _record(tmp_path, "agent-refunds", "t-1")
    lines = Path(path).read_text().splitlines()
    document = json.loads(lines[0])
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["traceId"]) == 32 and int(span["traceId"], 16)  # hex, not base64
    assert len(span["spanId"]) == 16 and int(span["spanId"], 16)
    resource = document["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "agent-refunds"}} in resource
    assert trace_id in {
        json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] for line in lines
    }


def test_read_back_as_one_tree_per_task(tmp_path: Path) -> None:
    trace_id, path = _record(tmp_path, "agent-refunds", "t-1")
    with open(path, "a") as handle:
        handle.write('{"resourceSpans": [ cut short by a crash\n')
    spans = task_trace(read_spans(tmp_path), "t-1")
    assert {s.trace_id for s in spans} == {trace_id}
    (root,) = span_tree(spans)
    assert root.name == "invoke_agent refunds" and root.service == "agent-refunds"
    assert [c.name for c in root.children] == ["chat scripted", "execute_tool payments_refund"]
    assert root.children[0].attributes["gen_ai.usage.input_tokens"] == 340
    assert root.children[1].failed and root.children[1].status_message == "UNAVAILABLE"
    assert task_trace(read_spans(tmp_path), "t-2") == []


def test_agentmesh_trace_prints_the_tree(tmp_path: Path) -> None:
    _record(tmp_path, "agent-refunds", "t-1")
    runner = CliRunner()
    result = runner.invoke(app, ["trace", "t-1", "--dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "invoke_agent refunds" in result.output and "execute_tool payments_refund" in result.output
    assert "input_tokens=340" in result.output and "ERROR UNAVAILABLE" in result.output
    assert "unrelated" not in result.output
    as_json = runner.invoke(app, ["trace", "t-1", "--dir", str(tmp_path), "--json"])
    assert json.loads(as_json.output)[0]["name"] == "invoke_agent refunds"
    missing = runner.invoke(app, ["trace", "t-9", "--dir", str(tmp_path)])
    assert missing.exit_code == 1
    nowhere = runner.invoke(app, ["trace", "t-1", "--dir", str(tmp_path / "none")])
    assert nowhere.exit_code == 2
    # Without --dir: AGENTMESH_TRACE_DIR (through Settings), as `agentmesh up` sets it for its services.
    from_env = runner.invoke(
        app, ["trace", "t-1"], env={"AGENTMESH_TRACE_DIR": str(tmp_path), "COLUMNS": "200"}
    )
    assert from_env.exit_code == 0 and "invoke_agent refunds" in from_env.output, from_env.output

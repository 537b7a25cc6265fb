"""Spans in files, for runs without a collector: OTLP JSON lines written and read back.

Writing: `SpanFileExporter(directory, service)` appends each batch as one line holding an OTLP
`ExportTraceServiceRequest` in the OTLP/JSON encoding (ids as hex, as the OTLP specification
asks, not protobuf's base64) to `<directory>/<service>-<pid>.jsonl` — one file per process, so
processes never interleave. An OTel collector's `otlpjsonfile` receiver reads the same lines.

Reading: `read_spans(directory)` flattens every file into `SpanRecord`s; `task_trace(spans,
task_id)` picks the traces one task's spans belong to; `span_tree` orders them parent first.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

TASK_ID_ATTRIBUTE = "agentmesh.task_id"  # on the worker's `task.attempt` and the `invoke_agent` span
STATUS_ERROR = 2  # OTLP Status.code STATUS_CODE_ERROR
_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(document: Any) -> Any:
    """Protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants trace and span ids as hex."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key in _ID_KEYS and isinstance(value, str):
                document[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(document, list):
        for item in document:
            _hex_ids(item)
    return document


def otlp_json(spans: Sequence[ReadableSpan]) -> str:
    """One OTLP/JSON ExportTraceServiceRequest (a single line) for `spans`."""
    request = encode_spans(spans)
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    return json.dumps(_hex_ids(document), separators=(",", ":"), ensure_ascii=False)


class SpanFileExporter(SpanExporter):
    """Appends every exported batch to `<directory>/<service>-<pid>.jsonl` (one line per batch)."""

    def __init__(self, directory: str | Path, service: str) -> None:
        self.path = Path(directory) / f"{service}-{os.getpid()}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._fd is None or not spans:
            return SpanExportResult.SUCCESS
        try:
            os.write(self._fd, (otlp_json(spans) + "\n").encode())
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


# -- reading -------------------------------------------------------------------------------------


@dataclass
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int = 0
    status_message: str = ""
    children: list[SpanRecord] = field(default_factory=list, repr=False)

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6

    @property
    def failed(self) -> bool:
        return self.status_code == STATUS_ERROR


def _value(any_value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in any_value:
            return any_value[key]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "arrayValue" in any_value:
        return [_value(v) for v in any_value["arrayValue"].get("values", [])]
    return None


def _attributes(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items}


def parse_line(line: str) -> list[SpanRecord]:
    """The spans of one OTLP/JSON line (an ExportTraceServiceRequest)."""
    document = json.loads(line)
    records: list[SpanRecord] = []
    for resource_spans in document.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        service = str(resource.get("service.name", "?"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                status = span.get("status", {})
                records.append(
                    SpanRecord(
                        trace_id=span["traceId"],
                        span_id=span["spanId"],
                        parent_id=span.get("parentSpanId", ""),
                        name=span.get("name", ""),
                        service=service,
                        kind=int(span.get("kind", 0)),
                        start_ns=int(span.get("startTimeUnixNano", 0)),
                        end_ns=int(span.get("endTimeUnixNano", 0)),
                        attributes=_attributes(span.get("attributes", [])),
                        status_code=int(status.get("code", 0)),
                        status_message=status.get("message", ""),
                    )
                )
    return records


def read_spans(directory: str | Path) -> list[SpanRecord]:
    """Every span in `directory/*.jsonl` (a line cut short by a crash is skipped)."""
    records: list[SpanRecord] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    records.extend(parse_line(line))
                except (ValueError, KeyError):
                    continue
    return records


def task_trace(spans: Sequence[SpanRecord], task_id: str, trace_id: str = "") -> list[SpanRecord]:
    """The spans of the traces that carry `task_id` (or of `trace_id`), in start order."""
    traces = {trace_id} if trace_id else set()
    traces |= {s.trace_id for s in spans if s.attributes.get(TASK_ID_ATTRIBUTE) == task_id}
    return sorted((s for s in spans if s.trace_id in traces), key=lambda s: s.start_ns)


def span_tree(spans: Sequence[SpanRecord]) -> list[SpanRecord]:
    """The roots (spans whose parent is not among `spans`), each with its children, in start order."""
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        span.children = []
    roots: list[SpanRecord] = []
    for span in sorted(spans, key=lambda s: s.start_ns):
        parent = by_id.get(span.parent_id)
        if parent is not None and parent is not span:
            parent.children.append(span)
        else:
            roots.append(span)
    return roots

"""Spans of one test in memory: the kit's tracing switched on around the test, a real SDK provider.

OpenTelemetry allows one global TracerProvider per process (module tracers bind to it for good),
so the provider is installed once and forwards ended spans to the exporter of the test running now;
outside `recording_spans()` the kit's tracing is off again (no gRPC tracing interceptors on hosts
and channels made then) and spans go nowhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentmesh.kit import tracing


class _Forward(SpanProcessor):
    exporter: InMemorySpanExporter | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self.exporter is not None:
            self.exporter.export([span])


_forward = _Forward()
_provider: TracerProvider | None = None


@contextlib.contextmanager
def recording_spans() -> Iterator[InMemorySpanExporter]:
    global _provider
    if _provider is None:
        _provider = TracerProvider()
        _provider.add_span_processor(_forward)
        trace.set_tracer_provider(_provider)
    assert trace.get_tracer_provider() is _provider, "another TracerProvider is installed in this process"
    exporter = InMemorySpanExporter()
    _forward.exporter = exporter
    tracing._configured = True
    try:
        yield exporter
    finally:
        tracing._configured = False
        _forward.exporter = None

"""OpenTelemetry set-up from the standard OTEL_* environment variables.

Tracing is off unless an exporter is configured (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_TRACES_EXPORTER=console|otlp) or a
span directory is given (Settings.trace_dir, AGENTMESH_TRACE_DIR: OTLP JSON lines
for runs without a collector, see span_files.py), so an untraced process pays
nothing: the API's no-op tracer stays in place and no gRPC tracing interceptor
is installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace

_configured = False
FILE_FLUSH_MS = 200


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    return bool(
        exporter in {"console", "otlp"}
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(
    service_name: str, environ: Mapping[str, str] | None = None, *, trace_dir: str | None = None
) -> bool:
    """Install a TracerProvider with the configured exporters; returns whether tracing is on."""
    global _configured
    env = os.environ if environ is None else environ
    otel = tracing_requested(env)
    if not otel and not trace_dir:
        return False
    if _configured:
        return True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    name = env.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if otel:
        exporter: SpanExporter
        if env.get("OTEL_TRACES_EXPORTER", "").lower() == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if trace_dir:
        from agentmesh.kit.span_files import SpanFileExporter

        # A local file is cheap: flush often, so `agentmesh trace` sees a task's spans at once.
        provider.add_span_processor(
            BatchSpanProcessor(SpanFileExporter(trace_dir, name), schedule_delay_millis=FILE_FLUSH_MS)
        )
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def enabled() -> bool:
    """Whether configure_tracing installed a provider (spans are recorded and exported)."""
    return _configured


def server_interceptors() -> Sequence[Any]:
    """The OTel gRPC server interceptor, or nothing when tracing is off."""
    if not _configured:
        return ()
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return (aio_server_interceptor(),)  # type: ignore[no-untyped-call]


def client_interceptors() -> Sequence[Any]:
    """OTel gRPC client interceptors (inject traceparent), or nothing when tracing is off."""
    if not _configured:
        return ()
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return tuple(aio_client_interceptors())  # type: ignore[no-untyped-call]


def mark_failed(code_name: str, code_value: int) -> None:
    """Mark the current span (a server call's) as failed with its gRPC status; nothing when untraced."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", code_value)
    span.set_attribute("error.type", code_name)
    span.set_status(trace.Status(trace.StatusCode.ERROR, code_name))


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()

"""OpenTelemetry set-up from the standard OTEL_* environment variables.

Tracing is off unless an exporter is configured (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_TRACES_EXPORTER=console|otlp), so
an untraced process pays nothing: the API's no-op tracer stays in place and no
gRPC tracing interceptor is installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace

_configured = False


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


def configure_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install a TracerProvider with the configured exporter; returns whether tracing is on."""
    global _configured
    env = os.environ if environ is None else environ
    if not tracing_requested(env):
        return False
    if _configured:
        return True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    attributes: dict[str, Any] = {"service.name": env.get("OTEL_SERVICE_NAME") or service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    exporter: SpanExporter
    if env.get("OTEL_TRACES_EXPORTER", "").lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
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


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()

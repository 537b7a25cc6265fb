"""The trace context a task carries: the submitting call's, captured when a task is queued.

Submitting, running and resuming a task store the W3C `traceparent` of the call with the task
and in its queue entry (memory/tasks/entries.py); its attempts run in that trace
(memory/tasks/execution.py).
"""

from __future__ import annotations

from opentelemetry import propagate, trace


def current_carrier() -> dict[str, str]:
    """The current trace context as a W3C carrier (empty outside a trace)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def current_trace_id() -> str:
    """The current trace id in hex (empty outside a trace)."""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""

"""`agentmesh trace TASK_ID`: a task's spans as a tree, from the span files of a local run.

`agentmesh up` has every service write its spans to `<state-dir>/traces/*.jsonl` (OTLP JSON
lines, agentmesh/kit/span_files.py). The task's traces are those holding a span with its task id
(the worker's `task.attempt`, the agent's `invoke_agent`): the submitter's call, the queue hop, each
attempt, model calls and tool calls, every service's side. Each line: name, service, duration,
the GenAI attributes (model, tokens, tool), and the error status of a failed span. `--json` prints
the spans. Exit codes: 0 printed, 1 no span of that task (yet: spans reach the files within a
fraction of a second), 2 bad usage.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.text import Text
from rich.tree import Tree

from agentmesh.cli.common import EXIT_FAILED, EXIT_USAGE, console, current_settings, err_console
from agentmesh.kit.span_files import SpanRecord, read_spans, span_tree, task_trace

# Attributes worth a glance on a terminal (the rest are in --json).
SHOWN = (
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.tool.name",
    "gen_ai.tool.call.id",
    "agentmesh.tool.outcome",
    "agentmesh.tool.attempts",
    "agentmesh.attempt",
    "agentmesh.task.state",
    "agentmesh.task.stop_reason",
    "rpc.grpc.status_code",
    "error.type",
)
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _label(span: SpanRecord) -> Text:
    line = Text()
    line.append(span.name, "bold red" if span.failed else "bold")
    line.append(f"  {span.service}", "cyan")
    line.append(f"  {span.duration_ms:.1f} ms", "dim")
    shown = [
        f"{key.removeprefix('gen_ai.')}={span.attributes[key]}" for key in SHOWN if key in span.attributes
    ]
    if shown:
        line.append("  " + " ".join(shown), "dim")
    if span.failed:
        line.append(f"  ERROR {span.status_message}".rstrip(), "red")
    return line


def _add(tree: Tree, span: SpanRecord) -> None:
    branch = tree.add(_label(span))
    for child in span.children:
        _add(branch, child)


def trace(
    task_id: str = typer.Argument(..., help="The task's id."),
    state_dir: Path = typer.Option(None, help="State directory of the local mesh (default ./.agentmesh)."),
    traces_dir: Path = typer.Option(
        None, "--dir", help="Span files directory (default: AGENTMESH_TRACE_DIR, else <state-dir>/traces)."
    ),
    trace_id: str = typer.Option("", "--trace-id", help="Also show this trace (e.g. the task's trace_id)."),
    as_json: bool = typer.Option(False, "--json", help="Print the spans as JSON."),
) -> None:
    """Print a task's spans as a tree: durations, GenAI attributes, errors (`agentmesh up`'s span files)."""
    from agentmesh.cli.up import TRACES_DIR, _state_dir

    configured = current_settings().trace_dir
    directory = traces_dir or (Path(configured) if configured else _state_dir(state_dir) / TRACES_DIR)
    if not directory.is_dir():
        err_console.print(
            Text(
                f"no span files in {directory}: start the mesh with `agentmesh up` (it records traces)", "red"
            )
        )
        raise typer.Exit(EXIT_USAGE)
    spans = task_trace(read_spans(directory), task_id, trace_id)
    if not spans:
        err_console.print(Text(f"no spans of task {task_id} in {directory}", "red"))
        raise typer.Exit(EXIT_FAILED)
    if as_json:
        typer.echo(
            json.dumps([{k: v for k, v in asdict(s).items() if k != "children"} for s in spans], indent=2)
        )
        return
    roots = span_tree(spans)
    traces = sorted({s.trace_id for s in spans})
    top = Tree(Text(f"task {task_id} · trace {', '.join(traces)} · {len(spans)} spans"))
    for root in roots:
        _add(top, root)
    console.print(top)
    failed = sum(1 for s in spans if s.failed)
    if failed:
        console.print(Text(f"{failed} span(s) failed", "red"))

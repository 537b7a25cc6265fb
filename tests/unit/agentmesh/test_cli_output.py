"""What the CLI prints: server text never read as markup, ids never wrapped, one exit-code table,
"example stories" in user-facing text."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from agentmesh.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    err_console,
    exit_code,
    fail,
    id_table,
)
from agentmesh.cli.main import app
from agentmesh.cli.tools import TOOL_COLUMNS, tool_row
from agentmesh.kit.errors import FieldViolation, InvalidArgument, NotFound, Unavailable
from agentmesh.kit.validation import DOMAIN_SLUG
from agentmesh.v1 import tool_options_pb2, tool_pb2

ROOT = Path(__file__).resolve().parents[3]
PATTERN = "^[a-z][a-z0-9_]*$"
runner = CliRunner()


def test_server_text_is_printed_as_it_is() -> None:
    """`[a-z]` in a server message used to vanish (read as a rich style tag)."""
    error = InvalidArgument(
        f"tool name 'Bad' must match {PATTERN}",
        violations=[FieldViolation("tool.name", f"must match {PATTERN}", "PATTERN")],
    )
    with err_console.capture() as captured:
        exit_ = fail(error, "registry [::1]:50051")
    text = captured.get()
    assert text.count(PATTERN) == 2, text
    assert "[PATTERN]" in text, text
    assert exit_.exit_code == EXIT_USAGE
    with err_console.capture() as captured:
        fail(Unavailable("connect failed [bold]x[/bold]"), "registry [::1]:50051")
    assert "registry [::1]:50051 is unreachable: connect failed [bold]x[/bold]" in captured.get()


def test_a_bad_domain_names_its_pattern() -> None:
    result = runner.invoke(app, ["tasks", "dead-letters", "list", "--domain", "Bad_Domain"])
    assert result.exit_code == EXIT_USAGE
    assert DOMAIN_SLUG.pattern in result.output.replace("\n", ""), result.output


def test_one_exit_code_table() -> None:
    assert exit_code(InvalidArgument("x")) == EXIT_USAGE
    assert exit_code(NotFound("x")) == EXIT_FAILED
    assert exit_code(Unavailable("x")) == EXIT_UNREACHABLE
    result = runner.invoke(app, ["--help"], terminal_width=400, env={"COLUMNS": "400"})
    assert " ".join(EXIT_CODES_HELP.split()) in " ".join(result.output.split()), result.output
    readme = (ROOT / "README.md").read_text()
    assert "## Exit codes" in readme
    for code in ("| 0 | done", "| 1 | refused or failed", "| 2 | bad usage", "| 3 | unreachable"):
        assert code in readme


def _tool(name: str, endpoint: str, method: str, tags: list[str]) -> tool_pb2.ToolSpec:
    return tool_pb2.ToolSpec(
        name=name,
        version="1.10.0",
        side_effect=tool_options_pb2.SIDE_EFFECT_KEYED,
        endpoint=endpoint,
        method=method,
        tags=tags,
    )


TOOLS = [
    _tool("crm_get_customer", "localhost:50061", "crm.v1.CrmService/GetCustomer", ["crm", "read"]),
    _tool(
        "inventory_list_reservations",
        "inventory.shop.svc:50071",
        "inventory.v1.InventoryService/ListReservations",
        ["inventory", "read", "reservations"],
    ),
    _tool("shipping_create_shipment", "localhost:50065", "shipping.v1.ShippingService/CreateShipment", []),
]


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_tools_list_never_wraps_names_versions_or_endpoints(width: int) -> None:
    """At 80 columns `crm_get_customer` printed as `crm_get_cu` / `stomer`."""
    table, omitted, printed = id_table(TOOL_COLUMNS, [tool_row(t) for t in TOOLS], width)
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table, width=printed, crop=False)
    lines = out.getvalue().splitlines()
    # Wider than the terminal only when even name, version and endpoint cannot fit (60).
    assert (printed > width) == (width < 68), printed
    assert all(len(line) <= printed for line in lines), out.getvalue()
    for tool in TOOLS:
        for whole in (tool.name, tool.version, tool.endpoint):
            assert any(whole in line for line in lines), (whole, out.getvalue())
        if "method" not in omitted:
            assert any(tool.method in line for line in lines), out.getvalue()
    assert ("method" in omitted) == (width < 150), omitted
    assert "name" not in omitted and "endpoint" not in omitted


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if hasattr(command, "commands"):
            found.extend(_commands(command, f"{prefix}{name} "))
    return found


def test_user_facing_text_says_example_stories() -> None:
    """Never the source articles ("the seeds' stories"): the CLI help and the README."""
    group = typer.main.get_command(app)
    for name, command in _commands(group):
        text = f"{command.help or ''} {command.short_help or ''} {command.epilog or ''}"
        for param in command.params:
            text += f" {getattr(param, 'help', '') or ''}"
        assert "seed" not in text.lower(), (name, text)
    demo = next(c for n, c in _commands(group) if n == "demo")
    assert "example stories" in (demo.help or "")
    assert "seed" not in (ROOT / "README.md").read_text().lower()

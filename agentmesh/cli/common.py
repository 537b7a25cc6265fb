"""Shared pieces of the CLI: the consoles, the one exit-code table, error reporting.

Text that comes from a server, a file or the user (error messages, violations, names,
descriptions) is never read as rich markup: it goes through `escape()` (or a `Text`), so a
tool-name pattern like `^[a-z][a-z0-9_]*$` prints as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# Re-exported: the commands import the exit codes from here.
from agentmesh.cli.exits import EXIT_CODES_HELP as EXIT_CODES_HELP
from agentmesh.cli.exits import EXIT_FAILED as EXIT_FAILED
from agentmesh.cli.exits import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from agentmesh.cli.exits import EXIT_OK as EXIT_OK
from agentmesh.cli.exits import EXIT_UNREACHABLE as EXIT_UNREACHABLE
from agentmesh.cli.exits import EXIT_USAGE as EXIT_USAGE
from agentmesh.kit.config import ConfigError, Settings
from agentmesh.kit.errors import AgentmeshError, DeadlineExceeded, InvalidArgument, Unavailable

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def exit_code(error: AgentmeshError) -> int:
    """The exit code of an error, by its status code (the table in cli/exits.py)."""
    if isinstance(error, Unavailable | DeadlineExceeded):
        return EXIT_UNREACHABLE
    if isinstance(error, InvalidArgument):
        return EXIT_USAGE
    return EXIT_FAILED


def fail(error: AgentmeshError, target: str) -> typer.Exit:
    """Print `error` on stderr (server text escaped) and return the Exit of its code.

    `target` names what was called ("registry localhost:50051", "Redis at ..."), shown when it
    could not be reached. Usage: `raise fail(exc, "registry " + address) from None`.
    """
    code = exit_code(error)
    if code == EXIT_UNREACHABLE:
        err_console.print(f"[red]{escape(target)} is unreachable:[/red] {escape(error.message)}")
        return typer.Exit(code)
    reason = f" ({escape(error.reason)})" if error.reason else ""
    err_console.print(f"[red]{error.code.name}[/red]{reason}: {escape(error.message)}")
    for violation in error.violations:
        rule = f" \\[{escape(violation.reason)}]" if violation.reason else ""
        err_console.print(f"  - {escape(violation.field)}{rule}: {escape(violation.description)}")
    return typer.Exit(code)


def usage_error(message: str) -> typer.Exit:
    """Print a usage problem (escaped) and return the Exit for it (2)."""
    err_console.print(f"[red]{escape(message)}[/red]")
    return typer.Exit(EXIT_USAGE)


def current_settings() -> Settings:
    """This environment's Settings, where the commands' defaults come from (an option never reads
    the environment itself); a bad variable is a usage error (2) naming it."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise usage_error(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Column:
    """A column of `id_table`: ids (names, versions, endpoints, methods) never wrap; text may fold.

    `drop` orders what is left out when the ids do not fit the terminal (1 first); None: never.
    """

    header: str
    text: bool = False
    drop: int | None = None


_MIN_TEXT = 8  # the narrowest a folding text column gets


def id_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int
) -> tuple[Table, list[str], int]:
    """A table for a `width`-column terminal whose ids are never broken: the table, the headers
    left out, and the width to print it at.

    Cells are plain text (never markup). Text columns fold to what is left; when the ids do not
    fit, columns go in their `drop` order (the caller says which were left out); when even the
    remaining ids do not fit, the table is printed wider than the terminal (which wraps the
    line, but every id stays whole for copying) rather than broken inside an id.
    """
    natural = [max([cell_len(c.header), *(cell_len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))

    def needed(indexes: list[int]) -> int:  # borders and padding: 3 per column + 1
        return sum(min(natural[i], _MIN_TEXT) if columns[i].text else natural[i] for i in indexes) + (
            3 * len(indexes) + 1
        )

    for index in sorted(
        (i for i, c in enumerate(columns) if c.drop is not None), key=lambda i: columns[i].drop or 0
    ):
        if needed(shown) <= width:
            break
        shown.remove(index)
    table = Table()
    for i in shown:
        column = columns[i]
        if column.text:
            table.add_column(column.header, overflow="fold", min_width=min(natural[i], _MIN_TEXT))
        else:
            table.add_column(column.header, no_wrap=True, min_width=natural[i])
    for row in rows:
        table.add_row(*(Text(row[i]) for i in shown))
    omitted = [columns[i].header for i in range(len(columns)) if i not in shown]
    return table, omitted, max(width, needed(shown))


def print_id_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, more: str) -> None:
    """Print `id_table` for this terminal; name the columns left out and where to see them (`more`)."""
    table, omitted, width = id_table(columns, rows, console.width)
    console.print(table, width=width, crop=False)
    if omitted:
        console.print(f"[dim]not shown at this width: {escape(', '.join(omitted))} ({escape(more)})[/dim]")

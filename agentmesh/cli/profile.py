"""`agentmesh profile show|set|path`: the CLI profile (registry address, token, TLS files)."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.markup import escape

from agentmesh.cli.common import EXIT_FAILED, console, err_console, usage_error
from agentmesh.cli.profile_file import Profile, ProfileError, load_profile, profile_path, save_profile

app = typer.Typer(help="Show or edit the CLI profile.", no_args_is_help=True)


def _load() -> Profile:
    try:
        return load_profile()
    except ProfileError as exc:
        err_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_FAILED) from None


@app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print JSON."), reveal: bool = False) -> None:
    """Print the profile (the token is masked unless --reveal)."""
    values = asdict(_load())
    if values.get("token") and not reveal:
        values["token"] = values["token"][:8] + "…"
    if as_json:
        typer.echo(json.dumps({"path": str(profile_path()), **values}, indent=2, ensure_ascii=False))
        return
    console.print(f"[dim]{escape(str(profile_path()))}[/dim]")
    for key, value in values.items():
        console.print(f"[cyan]{key}[/cyan] = {escape('' if value is None else str(value))}")


@app.command("set")
def set_value(
    key: str = typer.Argument(..., help=f"One of: {', '.join(Profile.field_names())}."),
    value: str = typer.Argument(..., help="New value; an empty string removes the key."),
) -> None:
    """Set one profile value."""
    if key not in Profile.field_names():
        raise usage_error(f"unknown key {key!r}; known: {', '.join(Profile.field_names())}")
    profile = _load()
    setattr(profile, key, value or None)
    path = save_profile(profile)
    console.print(escape(f"{key} {'removed' if not value else 'set'} in {path}"))


@app.command("path")
def path() -> None:
    """Print where the profile lives."""
    typer.echo(str(profile_path()))

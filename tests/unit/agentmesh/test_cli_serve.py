"""`agentmesh serve [ROLE]` parses its one argument without a CLI framework: help, bad usage and a
bad configuration exit with the README's codes and say why."""

from __future__ import annotations

import pytest

from agentmesh.cli.exits import EXIT_OK, EXIT_USAGE
from agentmesh.cli.serve import command


def exits(args: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        command(args)
    return int(done.value.code or 0)


def test_help_names_the_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert exits(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("Usage: agentmesh serve [ROLE]") and "registry | agent | tool" in out


@pytest.mark.parametrize("args", [["agent", "tool"], ["--port", "1"], ["-x"]])
def test_anything_but_one_role_is_bad_usage(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert exits(args) == EXIT_USAGE
    assert "unexpected arguments" in capsys.readouterr().err


def test_a_bad_configuration_is_bad_usage_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENTMESH_TOOL", raising=False)
    assert exits(["tool"]) == EXIT_USAGE
    assert "AGENTMESH_ROLE=tool needs AGENTMESH_TOOL" in capsys.readouterr().err
    assert exits(["gardener"]) == EXIT_USAGE
    assert "gardener" in capsys.readouterr().err

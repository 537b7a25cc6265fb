from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.cli.profile_file import Profile, ProfileError, load_profile, resolve_registry, save_profile


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("AGENTMESH_PROFILE", raising=False)
    monkeypatch.delenv("AGENTMESH_REGISTRY", raising=False)
    return tmp_path / "agentmesh" / "profile.toml"


def test_round_trip_and_private_mode(isolated: Path) -> None:
    save_profile(Profile(registry="mesh:50051", token="tok"))
    assert load_profile() == Profile(registry="mesh:50051", token="tok")
    assert stat.S_IMODE(isolated.stat().st_mode) == 0o600


def test_registry_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_registry() == "localhost:50051"
    save_profile(Profile(registry="from-profile:1"))
    assert resolve_registry() == "from-profile:1"
    monkeypatch.setenv("AGENTMESH_REGISTRY", "from-env:2")
    assert resolve_registry() == "from-env:2"
    assert resolve_registry("from-flag:3") == "from-flag:3"


def test_bad_profiles_are_reported(isolated: Path) -> None:
    isolated.parent.mkdir(parents=True)
    isolated.write_text("registry = [1]\n")
    with pytest.raises(ProfileError, match="must be strings"):
        load_profile()
    isolated.write_text("colour = 'blue'\n")
    with pytest.raises(ProfileError, match="unknown keys"):
        load_profile()
    isolated.write_text("registry = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile()


def test_cli_set_show(isolated: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["profile", "set", "token", "secret-token-value"]).exit_code == 0
    shown = runner.invoke(app, ["profile", "show", "--json"])
    assert shown.exit_code == 0 and "secret-t…" in shown.output and "secret-token-value" not in shown.output
    assert runner.invoke(app, ["profile", "set", "colour", "x"]).exit_code == 2
    assert runner.invoke(app, ["profile", "set", "token", ""]).exit_code == 0
    assert load_profile().token is None

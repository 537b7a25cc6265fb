"""agentmesh/kit/process.py: the one entrypoint of the serve roles."""

from __future__ import annotations

import pytest

from agentmesh.kit.config import Role, Settings
from agentmesh.kit.process import EXIT_CONFIG, load_settings, run_process


class BadScript(Exception):
    pass


def test_a_configuration_error_is_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTMESH_GRPC_PORT", "not-a-port")
    with pytest.raises(SystemExit) as exited:
        load_settings(Role.TOOL)
    assert exited.value.code == EXIT_CONFIG
    assert "AGENTMESH_GRPC_PORT" in capsys.readouterr().err


def test_run_process_runs_the_service_and_maps_fatal_start_up_errors() -> None:
    settings = Settings.from_env({}, role=Role.TOOL.value)
    ran: list[str] = []

    async def serve() -> None:
        ran.append("served")

    run_process(settings, "tool-x", serve)
    assert ran == ["served"]

    async def broken() -> None:
        raise BadScript("rule 3: 'then' is required")

    with pytest.raises(SystemExit) as exited:
        run_process(settings, "model", broken, fatal=(BadScript,))
    assert exited.value.code == EXIT_CONFIG
    with pytest.raises(BadScript):  # anything else is a crash, not a start-up error
        run_process(settings, "model", broken)

"""`agentmesh up`'s checks before it starts anything: ports that are taken, offsets out of range."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.kit.config import REGISTRY_PORT
from agentmesh.kit.net import free_port, port_bindable

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_port_bindable_sees_listeners_and_the_local_end_of_a_connection() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        listening = server.getsockname()[1]
        assert not port_bindable("127.0.0.1", listening)
        # A connection's local end holds its port although nothing listens there.
        with socket.create_connection(("127.0.0.1", listening)) as client:
            assert not port_bindable("127.0.0.1", client.getsockname()[1])
    assert port_bindable("127.0.0.1", free_port())


@contextlib.contextmanager
def _held_port_from(lowest: int) -> Iterator[int]:
    """Bind some free port >= lowest and hold it."""
    for candidate in random.sample(range(lowest, lowest + 5000), 200):
        with socket.socket() as holder:
            try:
                holder.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            yield candidate
            return
    raise OSError(f"no free port from {lowest}")


def test_up_refuses_taken_ports_and_names_them(tmp_path: Path) -> None:
    # Hold the registry port of a mesh shifted to a free spot, then ask for that mesh.
    with _held_port_from(REGISTRY_PORT) as held:
        offset = held - REGISTRY_PORT
        result = runner.invoke(
            app,
            ["up", "--state-dir", str(tmp_path), "--port-offset", str(offset), "--redis-url", "redis://x"],
        )
    assert result.exit_code == 1, result.output
    assert "ports already in use" in result.output and str(held) in result.output
    assert not (tmp_path / "mesh.json").exists()


def test_up_refuses_an_offset_that_leaves_the_port_range(tmp_path: Path) -> None:
    result = runner.invoke(app, ["up", "--state-dir", str(tmp_path), "--port-offset", "20000"])
    assert result.exit_code == 2, result.output
    assert "above 65535" in result.output
    negative = runner.invoke(app, ["up", "--port-offset", "-1"])
    assert negative.exit_code == 2


def test_up_takes_its_defaults_from_the_settings_variables(tmp_path: Path) -> None:
    # AGENTMESH_PORT_OFFSET is read through Settings: the same checks as the option, before anything starts.
    env = {"AGENTMESH_PORT_OFFSET": "20000", "REDIS_URL": ""}
    result = runner.invoke(app, ["up", "--state-dir", str(tmp_path)], env=env)
    assert result.exit_code == 2, result.output
    assert "--port-offset 20000 puts ports above 65535" in result.output
    bad = runner.invoke(app, ["up", "--state-dir", str(tmp_path)], env={"AGENTMESH_PORT_OFFSET": "-1"})
    assert bad.exit_code == 2 and "AGENTMESH_PORT_OFFSET" in bad.output, bad.output
    # The option still wins over the variable.
    with _held_port_from(REGISTRY_PORT) as held:
        env = {"AGENTMESH_PORT_OFFSET": "20000", "REDIS_URL": "redis://x"}
        argv = ["up", "--state-dir", str(tmp_path), "--port-offset", str(held - REGISTRY_PORT)]
        taken = runner.invoke(app, argv, env=env)
    assert taken.exit_code == 1 and str(held) in taken.output, taken.output

"""Run a mesh service as a real child process and wait for its gRPC health.

Used by `agentmesh up` to supervise the local mesh and by the tests that need
whole processes (crash recovery, SIGTERM drain, end-to-end runs).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentmesh.kit import health


@dataclass
class ServiceProcess:
    """A child process serving gRPC on `grpc_port` (reported by health on 127.0.0.1)."""

    name: str
    argv: Sequence[str]
    grpc_port: int | None
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    health_service: str = ""
    cwd: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @classmethod
    def python_module(cls, name: str, module: str, *args: str, **kwargs: object) -> ServiceProcess:
        """`python -m module args...` with the current interpreter."""
        return cls(name=name, argv=[sys.executable, "-m", module, *args], **kwargs)  # type: ignore[arg-type]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> ServiceProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        else:
            output = None
        try:
            self._process = subprocess.Popen(
                list(self.argv),
                env=env,
                cwd=self.cwd,
                stdout=output if output is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if output is not None else subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if output is not None:
                output.close()
        return self

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            tail = self.log_tail()
            raise RuntimeError(
                f"{self.name} exited with code {self._process.returncode} before serving"
                + (f"\n--- last log lines ---\n{tail}" if tail else "")
            )

    async def wait_serving(self, timeout: float = 30.0) -> None:
        if self.grpc_port is None:
            raise ValueError(f"{self.name} has no gRPC port to check")
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            status = await health.check(self.target, self.health_service, timeout=0.5)
            if status == health.SERVING:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} not SERVING on {self.target} after {timeout:.0f}s\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)

    def wait_serving_sync(self, timeout: float = 30.0) -> None:
        if self.grpc_port is None:
            raise ValueError(f"{self.name} has no gRPC port to check")
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if health.check_sync(self.target, self.health_service, timeout=0.5) == health.SERVING:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} not SERVING on {self.target} after {timeout:.0f}s\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.running():
            assert self._process is not None
            self._process.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        assert self._process is not None
        return self._process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after `timeout`."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, no drain."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

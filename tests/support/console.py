"""The operator console beside a running mesh, its identities, and the system Chromium.

`agentmesh serve console` runs as a real process trusting a freshly generated issuer key
(AGENTMESH_JWKS); the tests mint user tokens with that key. The browser is the Debian
package `chromium` (`make test` installs it); its absence fails, never skips.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentmesh.kit.auth import TokenIssuer, generate_issuer_key, jwks_document
from agentmesh.kit.net import free_port
from agentmesh.localmesh.proc import ServiceProcess
from tests.support.agent_mesh import ROOT, SERVE, Mesh, wait_http

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TENANT = "default"


def chromium_path() -> str:
    """The system Chromium, or a failure saying how to get it."""
    for candidate in (
        os.environ.get("AGENTMESH_CHROMIUM", ""),
        "/usr/bin/chromium",
        shutil.which("chromium"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "Chromium is needed for the console's browser tests and was not found: install the Debian "
        "package (`apt-get update && apt-get install -y chromium`; `make test` does it when run as "
        "root) or set AGENTMESH_CHROMIUM to its path",
        pytrace=False,
    )


@dataclass
class Console:
    url: str
    process: ServiceProcess
    issuer: TokenIssuer

    def token(self, user: str, *scopes: str, tenant: str = TENANT) -> str:
        return self.issuer.user_token(user=user, tenant=tenant, scopes=scopes)

    def log(self, lines: int = 80) -> str:
        return self.process.log_tail(lines)


async def start_console(mesh: Mesh, workdir: Path, dev_users: dict[str, tuple[str, ...]]) -> Console:
    """The console for `mesh`; `dev_users` (label -> (user, scopes…)) become its dev identities."""
    key = generate_issuer_key()
    issuer = TokenIssuer([key])
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps(jwks_document([key])))
    dev = workdir / "dev-tokens.json"
    dev.write_text(
        json.dumps(
            {
                label: issuer.user_token(user=user, tenant=TENANT, scopes=scopes)
                for label, (user, *scopes) in dev_users.items()
            }
        )
    )
    port = free_port()
    process = ServiceProcess(
        name="console",
        argv=[*SERVE, "console"],
        grpc_port=None,
        env={
            **mesh.env,
            "AGENTMESH_HTTP_PORT": str(port),
            "AGENTMESH_JWKS": str(jwks),
            "AGENTMESH_CONSOLE_DEV_TOKENS": str(dev),
            "AGENTMESH_REGISTRY": mesh.registry,
        },
        log_path=workdir / "console.log",
        cwd=ROOT,
    )
    mesh.processes["console"] = process.start()
    url = f"http://127.0.0.1:{port}"
    await wait_http(f"{url}/healthz", process)
    return Console(url=url, process=process, issuer=issuer)

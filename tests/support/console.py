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
from tests.support.auth import DEFAULT_SCOPES

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


@dataclass(frozen=True)
class Identities:
    """A mesh issuer key for the tests: its JWKS file (for AGENTMESH_JWKS) and a minter.

    Made before the mesh starts, so every service can be given the same JWKS: the tokens the
    console verifies are the ones the agents verify once they check tokens."""

    issuer: TokenIssuer
    jwks: Path

    @classmethod
    def create(cls, workdir: Path) -> Identities:
        key = generate_issuer_key()
        jwks = workdir / "jwks.json"
        jwks.write_text(json.dumps(jwks_document([key])))
        return cls(TokenIssuer([key]), jwks)

    def token(self, user: str, *scopes: str, tenant: str = TENANT) -> str:
        """A user token holding `scopes` and the example tools' scopes (the agents check a user's
        scopes before every tool call, so a user without them could not refund at all)."""
        return self.issuer.user_token(user=user, tenant=tenant, scopes=(*DEFAULT_SCOPES, *scopes))


@dataclass
class Console:
    url: str
    process: ServiceProcess
    identities: Identities

    def token(self, user: str, *scopes: str, tenant: str = TENANT) -> str:
        return self.identities.token(user, *scopes, tenant=tenant)

    def log(self, lines: int = 80) -> str:
        return self.process.log_tail(lines)


async def start_console(
    mesh: Mesh, workdir: Path, identities: Identities, dev_users: dict[str, tuple[str, ...]]
) -> Console:
    """The console for `mesh`; `dev_users` (label -> (user, scopes…)) become its dev identities."""
    dev = workdir / "dev-tokens.json"
    dev.write_text(
        json.dumps({label: identities.token(user, *scopes) for label, (user, *scopes) in dev_users.items()})
    )
    port = free_port()
    process = ServiceProcess(
        name="console",
        argv=[*SERVE, "console"],
        grpc_port=None,
        env={
            **mesh.env,
            "AGENTMESH_HTTP_PORT": str(port),
            "AGENTMESH_JWKS": str(identities.jwks),
            "AGENTMESH_CONSOLE_DEV_TOKENS": str(dev),
            "AGENTMESH_REGISTRY": mesh.registry,
        },
        log_path=workdir / "console.log",
        cwd=ROOT,
    )
    mesh.processes["console"] = process.start()
    url = f"http://127.0.0.1:{port}"
    await wait_http(f"{url}/healthz", process)
    return Console(url=url, process=process, identities=identities)

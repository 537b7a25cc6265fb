"""`agentmesh keys generate`, `agentmesh token mint|inspect`: real keys, tokens verified by the kit."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.kit.auth import TokenVerifier, TrustedKeys
from agentmesh.kit.auth.keys import load_issuer_keys

runner = CliRunner()


def _verifier(jwks: Path) -> TokenVerifier:
    return TokenVerifier(TrustedKeys(jwks=str(jwks)))


async def test_generate_then_mint_a_user_token_the_mesh_accepts(tmp_path: Path) -> None:
    generated = runner.invoke(app, ["keys", "generate", "--out", str(tmp_path)])
    assert generated.exit_code == 0, generated.output
    key, jwks = tmp_path / "issuer.pem", tmp_path / "jwks.json"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE" not in jwks.read_text() and '"d"' not in jwks.read_text()  # public halves only
    minted = runner.invoke(
        app,
        [
            "token",
            "mint",
            "--user",
            "ada",
            "--tenant",
            "acme",
            "--scopes",
            "refunds:approve a:b",
            "--key",
            str(key),
        ],
    )
    assert minted.exit_code == 0, minted.output
    principal = await _verifier(jwks).verify(minted.output.strip(), audiences=("refunds", "agentmesh"))
    assert (principal.subject, principal.tenant) == ("ada", "acme")
    assert principal.scopes == frozenset({"refunds:approve", "a:b"})


async def test_a_service_token_and_a_rotated_key(tmp_path: Path) -> None:
    runner.invoke(app, ["keys", "generate", "--out", str(tmp_path)])
    key = tmp_path / "issuer.pem"
    first = load_issuer_keys(key)[0]
    added = runner.invoke(app, ["keys", "generate", "--add-to", str(key), "--algorithm", "ES256"])
    assert added.exit_code == 0, added.output
    keys = load_issuer_keys(key)
    assert keys[0].kid == first.kid and keys[1].algorithm == "ES256"  # the old key still signs
    assert len(json.loads((tmp_path / "jwks.json").read_text())["keys"]) == 2
    minted = runner.invoke(
        app, ["token", "mint", "--service", "payments"], env={"AGENTMESH_SIGNING_KEY": str(key)}
    )
    principal = await _verifier(tmp_path / "jwks.json").verify(
        minted.output.strip(), audiences=("agentmesh",)
    )
    assert principal.service_name == "payments" and principal.scopes == frozenset({"registry:write"})


@pytest.mark.parametrize(
    "argv",
    [
        ["token", "mint", "--tenant", "t"],  # neither user nor service
        ["token", "mint", "--user", "u", "--service", "s"],
        ["token", "mint", "--user", "not valid"],
        ["token", "mint", "--user", "u"],  # no key anywhere
    ],
)
def test_mint_refuses_bad_usage(argv: list[str]) -> None:
    result = runner.invoke(app, argv, env={"AGENTMESH_SIGNING_KEY": ""})
    assert result.exit_code == 2, result.output


def test_inspect_shows_claims_never_the_signature(tmp_path: Path) -> None:
    runner.invoke(app, ["keys", "generate", "--out", str(tmp_path)])
    token = runner.invoke(
        app, ["token", "mint", "--user", "ada", "--key", str(tmp_path / "issuer.pem")]
    ).output.strip()
    result = runner.invoke(app, ["token", "inspect", token, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["claims"]["sub"] == "ada" and document["verified"] is False
    assert token.rsplit(".", 1)[1] not in result.output
    assert runner.invoke(app, ["token", "inspect", "garbage"]).exit_code == 1

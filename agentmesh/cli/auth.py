"""`agentmesh keys …` and `agentmesh token …`: the mesh issuer's keys and the tokens it signs.

    agentmesh keys generate [--out DIR] [--algorithm EdDSA|ES256] [--add-to KEYFILE]
    agentmesh token mint --user U --tenant T --scopes "a:b c:d" [--ttl 3600] [--audience D]
    agentmesh token mint --service NAME [--scopes "registry:write"]
    agentmesh token inspect TOKEN

`keys generate` writes a private key (PEM, mode 0600: AGENTMESH_SIGNING_KEY)
and its public JWKS (AGENTMESH_JWKS for services that only verify);
`--add-to` puts a new key after the existing ones of a key file, published but
not yet signing (rotation: make it first once every verifier has it). `token
mint` signs with the first key of AGENTMESH_SIGNING_KEY (or `--key`). `token
inspect` prints a token's header and claims without verifying it and never
prints its signature.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from pathlib import Path
from typing import Any

import typer

from agentmesh.cli.common import EXIT_FAILED, EXIT_USAGE, console, current_settings, err_console
from agentmesh.kit.auth import MESH_AUDIENCE, TokenIssuer, generate_issuer_key, jwks_document
from agentmesh.kit.auth.keys import SIGNING_ALGORITHMS, KeyFileError, load_issuer_keys, parse_issuer_keys
from agentmesh.kit.validation import OPAQUE_ID

keys_app = typer.Typer(help="The mesh issuer's signing keys.", no_args_is_help=True)
token_app = typer.Typer(help="Mint and inspect the mesh's tokens.", no_args_is_help=True)

KEY_OPTION = typer.Option(None, "--key", help="Signing key (PEM). Default: AGENTMESH_SIGNING_KEY.")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@keys_app.command("generate")
def generate(
    out: Path = typer.Option(Path("."), "--out", help="Folder for issuer.pem and jwks.json."),
    algorithm: str = typer.Option("EdDSA", "--algorithm", help=f"One of {', '.join(SIGNING_ALGORITHMS)}."),
    add_to: Path = typer.Option(
        None, "--add-to", help="Append the new key to this key file (published, not signing yet)."
    ),
) -> None:
    """Generate a mesh issuer key pair: the private key (PEM) and the public JWKS."""
    try:
        key = generate_issuer_key(algorithm)
        existing = parse_issuer_keys(add_to.read_bytes(), source=str(add_to)) if add_to else []
    except (KeyFileError, OSError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from None
    keys = [*existing, key]
    key_path = add_to or out / "issuer.pem"
    _write_private(key_path, b"".join(k.pem() for k in keys))
    jwks_path = (add_to.parent if add_to else out) / "jwks.json"
    jwks_path.write_text(json.dumps(jwks_document(keys), indent=2) + "\n")
    console.print(f"key {key.kid} ({key.algorithm}) in {key_path}; public JWKS in {jwks_path}")
    if add_to:
        console.print(
            "the first key of the file still signs: move the new one first once every verifier has it"
        )


def _issuer(key: Path | None) -> TokenIssuer:
    key = key or current_settings().signing_key
    if key is None:
        err_console.print("[red]no signing key: pass --key or set AGENTMESH_SIGNING_KEY[/red]")
        raise typer.Exit(EXIT_USAGE)
    try:
        return TokenIssuer(load_issuer_keys(key))
    except KeyFileError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from None


@token_app.command("mint")
def mint(
    user: str = typer.Option(None, "--user", help="The user (`sub`)."),
    tenant: str = typer.Option("default", "--tenant", help="The tenant (`tid`)."),
    service: str = typer.Option(None, "--service", help="A service token for NAME (`sub` = service:NAME)."),
    scopes: str = typer.Option(None, "--scopes", help='Space-separated scopes, e.g. "refunds:approve".'),
    audience: str = typer.Option(MESH_AUDIENCE, "--audience", help="`aud`: an agent's domain, or any."),
    ttl: float = typer.Option(3600.0, "--ttl", min=1, help="Lifetime in seconds."),
    key: Path = KEY_OPTION,
) -> None:
    """Mint a user token (--user/--tenant) or a service token (--service); prints the token only."""
    if bool(user) == bool(service):
        err_console.print("give exactly one of --user or --service")
        raise typer.Exit(EXIT_USAGE)
    for name, value in (("--user", user), ("--tenant", tenant), ("--service", service)):
        if value is not None and not OPAQUE_ID.fullmatch(value):
            err_console.print(f"{name} {value[:80]!r} must match {OPAQUE_ID.pattern}")
            raise typer.Exit(EXIT_USAGE)
    issuer = _issuer(key)
    if service:
        wanted = scopes.split() if scopes is not None else ["registry:write"]
        token = issuer.service_token(service, scopes=wanted, ttl_s=ttl)
    else:
        token = issuer.user_token(
            user=user, tenant=tenant, scopes=(scopes or "").split(), audience=audience, ttl_s=ttl
        )
    typer.echo(token)


def _segment(text: str) -> Any:
    padded = text + "=" * (-len(text) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def token_claims(token: str) -> dict[str, Any]:
    """A token's claims, NOT verified (for the CLI's own checks and messages); {} if unreadable."""
    parts = token.strip().split(".")
    try:
        claims = _segment(parts[1]) if len(parts) == 3 else {}
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _when(value: Any) -> str | None:
    if not isinstance(value, int | float):
        return None
    return datetime.datetime.fromtimestamp(value, tz=datetime.UTC).isoformat(timespec="seconds")


@token_app.command("inspect")
def inspect(
    token: str = typer.Argument(..., help="The token (a JWT)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print a token's header and claims (NOT verified; its signature is never printed)."""
    parts = token.strip().removeprefix("Bearer ").split(".")
    try:
        if len(parts) != 3:
            raise ValueError("a JWT has three parts")
        header, claims = _segment(parts[0]), _segment(parts[1])
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise ValueError("header and claims must be JSON objects")
    except ValueError as exc:
        err_console.print(f"[red]not a JWT: {exc}[/red]")
        raise typer.Exit(EXIT_FAILED) from None
    document = {
        "header": header,
        "claims": claims,
        "times": {name: _when(claims.get(name)) for name in ("iat", "nbf", "exp")},
        "verified": False,
    }
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    console.print("[yellow]not verified: inspect shows what a token says, not whether to trust it[/yellow]")
    console.print(json.dumps(document, indent=2), markup=False)

"""The mesh issuer's keys: generate, load, publish.

The mesh issuer is one asymmetric key pair per `kid` (EdDSA/Ed25519 by default,
ES256 accepted): the private keys sit in one PEM file (AGENTMESH_SIGNING_KEY),
the first key signs, every key in the file is published in the JWKS, so a new
key can be added first (published everywhere) and made the signer later
(rotation without a window of unverifiable tokens). The `kid` is the RFC 7638
thumbprint of the public key: stable, and nothing to configure.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

# Algorithms the mesh signs with. Verification accepts these and RS256/PS256 (external IdPs).
SIGNING_ALGORITHMS = ("EdDSA", "ES256")
DEFAULT_ALGORITHM = "EdDSA"

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class KeyFileError(ValueError):
    """A key file is missing, unreadable or holds an unsupported key; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: PrivateKey) -> dict[str, str]:
    """The public half as a JWK (without kid/alg/use)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        numbers = key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }
    raise KeyFileError("unsupported issuer key: use Ed25519 (EdDSA) or P-256 (ES256)")


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the key's `kid`."""
    members = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class IssuerKey:
    """One private signing key of the mesh issuer, with its kid and algorithm."""

    private_key: PrivateKey
    kid: str
    algorithm: str

    @classmethod
    def of(cls, private_key: PrivateKey) -> IssuerKey:
        jwk = public_jwk(private_key)
        algorithm = "EdDSA" if jwk["kty"] == "OKP" else "ES256"
        return cls(private_key, thumbprint(jwk), algorithm)

    def public(self) -> dict[str, str]:
        return {**public_jwk(self.private_key), "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def generate_issuer_key(algorithm: str = DEFAULT_ALGORITHM) -> IssuerKey:
    if algorithm == "EdDSA":
        return IssuerKey.of(ed25519.Ed25519PrivateKey.generate())
    if algorithm == "ES256":
        return IssuerKey.of(ec.generate_private_key(ec.SECP256R1()))
    raise KeyFileError(f"unsupported algorithm {algorithm!r}: choose one of {', '.join(SIGNING_ALGORITHMS)}")


_PEM_BEGIN = b"-----BEGIN "


def parse_issuer_keys(data: bytes, *, source: str = "key file") -> list[IssuerKey]:
    """Every private key in a PEM bundle, in order (the first one signs)."""
    blocks = [_PEM_BEGIN + part for part in data.split(_PEM_BEGIN)[1:]]
    if not blocks:
        raise KeyFileError(f"{source}: no PEM private key found")
    keys: list[IssuerKey] = []
    for block in blocks:
        try:
            loaded: Any = serialization.load_pem_private_key(block, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{source}: not an unencrypted PEM private key ({exc})") from None
        keys.append(IssuerKey.of(loaded))
    return keys


def load_issuer_keys(path: Path) -> list[IssuerKey]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the signing key {path}: {exc.strerror}") from None
    return parse_issuer_keys(data, source=str(path))


def jwks_document(keys: list[IssuerKey]) -> dict[str, Any]:
    """The public JWKS for these keys (what /.well-known/jwks.json serves)."""
    return {"keys": [key.public() for key in keys]}

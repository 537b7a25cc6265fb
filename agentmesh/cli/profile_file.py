"""The CLI profile: where the registry is, which token to send, TLS files.

TOML at `$XDG_CONFIG_HOME/agentmesh/profile.toml` (default
`~/.config/agentmesh/profile.toml`, or `AGENTMESH_PROFILE` to point elsewhere).
`agentmesh up` writes it; `agentmesh profile show|set` edit it. Precedence for
every value: command-line flag, then environment, then profile, then default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import tomli_w

from agentmesh.kit.config import DEFAULT_REGISTRY, Settings


@dataclass
class Profile:
    registry: str | None = None
    token: str | None = None
    # A second identity `agentmesh up` writes: a user holding the demo domains' approve scopes.
    approver_token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    redis_url: str | None = None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def profile_path() -> Path:
    settings = Settings.from_env()
    if settings.profile is not None:
        return settings.profile
    base = settings.xdg_config_home or Path.home() / ".config"
    return base / "agentmesh" / "profile.toml"


class ProfileError(ValueError):
    pass


def load_profile(path: Path | None = None) -> Profile:
    path = path or profile_path()
    if not path.exists():
        return Profile()
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - set(Profile.field_names())
    if unknown:
        raise ProfileError(f"{path}: unknown keys {sorted(unknown)}; known: {Profile.field_names()}")
    wrong = [key for key, value in data.items() if not isinstance(value, str)]
    if wrong:
        raise ProfileError(f"{path}: {', '.join(sorted(wrong))} must be strings")
    return Profile(**data)


def save_profile(profile: Profile, path: Path | None = None) -> Path:
    """Write the profile (mode 0600: it may hold a token)."""
    path = path or profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {key: value for key, value in asdict(profile).items() if value is not None}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        tomli_w.dump(data, handle)
    tmp.replace(path)
    return path


def resolve_registry(flag: str | None = None) -> str:
    """--registry, then AGENTMESH_REGISTRY, then the profile, then localhost:50051."""
    return flag or Settings.from_env().registry or load_profile().registry or DEFAULT_REGISTRY


def resolve_token(flag: str | None = None) -> str | None:
    """--token, then AGENTMESH_TOKEN, then the profile."""
    return flag or Settings.from_env().cli_token or load_profile().token

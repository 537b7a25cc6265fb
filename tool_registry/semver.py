"""Tool versions and version ranges.

Versions are strict semantic versions (`1.2.0`, `1.2.0-rc.1`). What callers may
ask for (GetTool, agent cards' `version_range`):

- an exact version: `1.2.0`;
- `latest` or empty: the highest stable version;
- an npm-style range: `^1.2`, `~1.2`, `>=1.0 <2.0`, `1.x`, `*`, alternatives
  with `||` (parsed by `semantic_version.NpmSpec`; a prerelease matches only
  a range that names a prerelease of the same major.minor.patch, as in npm).

Among matching versions the highest wins, but versions that are not
deprecated are preferred: a deprecated version is picked only when nothing else
matches (an exact version always resolves, deprecated or not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import semantic_version

LATEST = "latest"
# Longest version or range string accepted (keeps keys and messages bounded).
MAX_VERSION_LENGTH = 64
MAX_RANGE_LENGTH = 128


class VersionError(ValueError):
    """A version or range does not parse; the message says what is expected."""


def parse_version(text: str) -> semantic_version.Version:
    """A strict semantic version; VersionError otherwise."""
    if not text or len(text) > MAX_VERSION_LENGTH:
        raise VersionError(f"{text[:80]!r} is not a semantic version like 1.2.0")
    try:
        return semantic_version.Version(text)
    except ValueError:
        raise VersionError(
            f"{text[:80]!r} is not a semantic version like 1.2.0 (MAJOR.MINOR.PATCH, see https://semver.org)"
        ) from None


def is_valid_version(text: str) -> bool:
    try:
        parse_version(text)
    except VersionError:
        return False
    return True


def major(text: str) -> int:
    return int(parse_version(text).major)


def sort_key(text: str) -> semantic_version.Version:
    return parse_version(text)


def sorted_versions(versions: Iterable[str]) -> list[str]:
    """Ascending semver order (prereleases before their release)."""
    return sorted(versions, key=sort_key)


@dataclass(frozen=True)
class VersionQuery:
    """A parsed `version` request: exact, latest, or a range."""

    text: str
    exact: str | None = None
    spec: semantic_version.NpmSpec | None = None

    @property
    def is_latest(self) -> bool:
        return self.exact is None and self.spec is None


def parse_query(text: str) -> VersionQuery:
    """Parse what a caller asks for; VersionError with the accepted forms otherwise."""
    cleaned = text.strip()
    if cleaned in ("", LATEST):
        return VersionQuery(cleaned)
    if len(cleaned) > MAX_RANGE_LENGTH:
        raise VersionError(f"version range is {len(cleaned)} characters; at most {MAX_RANGE_LENGTH}")
    if is_valid_version(cleaned):
        return VersionQuery(cleaned, exact=str(parse_version(cleaned)))
    try:
        spec = semantic_version.NpmSpec(cleaned)
    except ValueError:
        raise VersionError(
            f"{cleaned[:80]!r} is neither a version (1.2.0), `latest`, nor a range "
            "(^1.2, ~1.2, >=1.0 <2.0, 1.x)"
        ) from None
    return VersionQuery(cleaned, spec=spec)


def select(query: VersionQuery | str, versions: Mapping[str, bool]) -> str | None:
    """The version `query` resolves to among `versions` (version -> deprecated), or None.

    Exact versions resolve even when deprecated. `latest` takes the highest stable
    version (a prerelease only when no stable version exists); ranges follow npm.
    Either way, a non-deprecated candidate beats a higher deprecated one.
    """
    if isinstance(query, str):
        query = parse_query(query)
    parsed = {}
    for text in versions:
        try:
            parsed[text] = parse_version(text)
        except VersionError:
            continue  # never stored; tolerate rather than fail a read
    if query.exact is not None:
        wanted = parse_version(query.exact)
        return next((text for text, v in parsed.items() if v == wanted), None)
    if query.spec is not None:
        candidates = [text for text, v in parsed.items() if v in query.spec]
    else:
        stable = [text for text, v in parsed.items() if not v.prerelease]
        candidates = stable or list(parsed)
    if not candidates:
        return None
    return max(candidates, key=lambda text: (not versions[text], parsed[text]))

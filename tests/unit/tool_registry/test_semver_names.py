from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tool_registry import names, semver

VERSIONS = {
    "1.0.0": False,
    "1.2.0": False,
    "1.2.5": False,
    "1.3.0": True,
    "1.10.0": False,
    "2.0.0-rc.1": False,
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "1.10.0"),
        ("latest", "1.10.0"),
        ("1.2.0", "1.2.0"),
        ("1.3.0", "1.3.0"),  # exact resolves even when deprecated
        ("^1.2", "1.10.0"),
        ("~1.2", "1.2.5"),
        ("~1.3", "1.3.0"),  # only a deprecated version matches: it is still picked
        (">=1.0 <1.3", "1.2.5"),
        (">=1.0 <2.0", "1.10.0"),
        ("1.x", "1.10.0"),
        ("1.2.x", "1.2.5"),
        ("^2", None),  # prereleases do not match plain ranges (npm)
        (">=2.0.0-rc.0", "2.0.0-rc.1"),
        ("3.0.0", None),
        ("^1.3.0 <1.4", "1.3.0"),
    ],
)
def test_select(query: str, expected: str | None) -> None:
    assert semver.select(query, VERSIONS) == expected


def test_non_deprecated_preferred_over_higher_deprecated() -> None:
    assert semver.select("^1", {"1.0.0": False, "1.1.0": True}) == "1.0.0"
    assert semver.select("latest", {"1.0.0": True, "1.1.0": True}) == "1.1.0"


def test_latest_falls_back_to_prereleases() -> None:
    assert semver.select("latest", {"1.0.0-alpha": False, "1.0.0-beta": False}) == "1.0.0-beta"
    assert semver.select("latest", {}) is None


@pytest.mark.parametrize("bad", ["1.2", "v1.2.0", "01.2.3", "1.2.3.4", "", "x" * 65])
def test_invalid_versions(bad: str) -> None:
    assert not semver.is_valid_version(bad)
    with pytest.raises(semver.VersionError, match="semantic version"):
        semver.parse_version(bad)


@pytest.mark.parametrize("bad", ["garbage!", "^^1", "1.2.3 ||| 2", "=> 1"])
def test_invalid_ranges_say_what_is_accepted(bad: str) -> None:
    with pytest.raises(semver.VersionError, match=r"\^1\.2"):
        semver.parse_query(bad)


def test_sorting_is_semver_not_lexical() -> None:
    assert semver.sorted_versions(["1.10.0", "1.9.0", "1.9.0-rc.1", "0.1.0"]) == [
        "0.1.0",
        "1.9.0-rc.1",
        "1.9.0",
        "1.10.0",
    ]
    assert semver.major("3.2.1") == 3


@given(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)))
def test_every_version_selects_itself_exactly(parts: tuple[int, int, int]) -> None:
    version = ".".join(map(str, parts))
    assert semver.select(version, {version: True, "99.0.0": False}) == version
    assert semver.select(f"^{version}", {version: False}) == version


def test_agent_tool_names() -> None:
    assert names.agent_tool_name("order-fulfillment") == "agent_order_fulfillment"
    assert names.agent_domain("agent_order_fulfillment") == "order-fulfillment"
    assert names.is_agent_tool("agent_refunds") and not names.is_agent_tool("payments_refund")
    with pytest.raises(ValueError, match="domain slug"):
        names.agent_tool_name("Bad_Domain")


@given(st.from_regex(names.DOMAIN_SLUG, fullmatch=True))
def test_agent_tool_name_round_trips(domain: str) -> None:
    tool = names.agent_tool_name(domain)
    assert names.TOOL_NAME.fullmatch(tool)
    assert names.agent_domain(tool) == domain

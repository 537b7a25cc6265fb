from __future__ import annotations

import pytest

from examples.inventory import SEED_STOCK, build, parse_stock


def test_stock_text_replaces_the_seed() -> None:
    assert parse_stock("ABC-001=500, DEF-002=3,") == {"ABC-001": 500, "DEF-002": 3}
    assert build(parse_stock("ABC-001=7")).state["stock"] == {"ABC-001": 7}  # type: ignore[attr-defined]
    assert build().state["stock"] == SEED_STOCK  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["ABC-001", "ABC-001=x", "=3", "ABC-001=-1"])
def test_a_bad_stock_item_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match="is not SKU=COUNT"):
        parse_stock(bad)

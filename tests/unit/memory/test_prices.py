from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.kit.config import ConfigError
from memory.prices import PriceTable, builtin_prices


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    return path


def test_table_from_yaml_exact_prefix_and_default(tmp_path: Path) -> None:
    table = PriceTable.load(
        write(
            tmp_path,
            """
models:
  gpt-4o: {prompt: 2.5, completion: 10}
  "llama-*": {prompt: 0.1, completion: 0.2}
  "llama-3.1-*": {prompt: 0.3, completion: 0.4}
default: {prompt: 1, completion: 1}
""",
        )
    )
    assert table.cost("gpt-4o", 1_000_000, 100_000).usd == pytest.approx(3.5)
    assert table.price("llama-3.1-70b") == table.models["llama-3.1-*"]  # longest prefix wins
    assert table.price("llama-2") == table.models["llama-*"]
    assert table.cost("mystery", 500, 500).usd == pytest.approx(0.001)
    assert table.source.endswith("prices.yaml")


def test_unknown_model_costs_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    table = builtin_prices()
    cost = table.cost("scripted-demo", 1000, 10)
    assert cost.nano_usd == 0 and not cost.priced
    table.cost("scripted-demo", 1000, 10)
    assert [r.getMessage() for r in caplog.records].count(
        "model has no price: its tokens are counted as unpriced and cost 0"
    ) == 1
    assert table.cost("gpt-4o-mini", 1_000_000, 0).usd == pytest.approx(0.15)


def test_costs_are_exact_in_nano_dollars() -> None:
    cost = builtin_prices().cost("gpt-4o-mini", 3, 1)  # 3 * 0.15 + 1 * 0.60 micro-dollars
    assert cost.nano_usd == 1050


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [1, 2]", "models"),
        ("models:\n  x: {prompt: -1, completion: 0}", "models.x.prompt"),
        ("models:\n  x: {prompt: 1}", "completion"),
        ("prices: {}", "prices"),
        ("models: {x: {prompt: 1, completion: 1}", "not valid YAML"),
    ],
)
def test_bad_tables_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PriceTable.load(write(tmp_path, text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.load(tmp_path / "absent.yaml")


def test_no_path_means_builtin() -> None:
    assert PriceTable.load(None).source == "built-in"

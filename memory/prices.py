"""Model prices for cost attribution: USD per 1M prompt and completion tokens.

The table comes from the YAML file named by AGENTMESH_PRICE_TABLE:

    # USD per 1M tokens
    models:
      gpt-4o:          {prompt: 2.50, completion: 10.00}
      "llama-3.1-*":   {prompt: 0.00, completion: 0.00}   # a trailing * matches a name prefix
    default: {prompt: 0.50, completion: 1.50}            # optional: price for models not listed

Without the variable, `BUILTIN_PRICES` applies (a few public list prices;
set your own table for real accounting). A model with no price costs 0 and
is reported as *unpriced*: its tokens are counted in `unpriced_tokens` next to
the cost (usage records, `agentmesh usage`, the `agentmesh_unpriced_tokens`
metric) and logged once per model, so a zero cost is never mistaken for a free
model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from agentmesh.kit.config import ConfigError
from agentmesh.kit.file_models import FileModel

log = logging.getLogger(__name__)

PER_TOKENS = 1_000_000
NANO = 1_000_000_000


class Price(FileModel):
    """USD per 1M tokens."""

    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)


class _TableFile(FileModel):
    models: dict[str, Price] = Field(default_factory=dict)
    default: Price | None = None


@dataclass(frozen=True, slots=True)
class Cost:
    """The cost of one model call. `priced` is False when the model has no price (cost 0)."""

    nano_usd: int
    priced: bool

    @property
    def usd(self) -> float:
        return self.nano_usd / NANO


@dataclass
class PriceTable:
    models: dict[str, Price]
    default: Price | None = None
    source: str = "built-in"
    _warned: set[str] = field(default_factory=set, repr=False)

    def price(self, model: str) -> Price | None:
        """Exact name first, then the longest matching `prefix*` pattern, then the default."""
        if model in self.models:
            return self.models[model]
        best: tuple[int, Price] | None = None
        for pattern, price in self.models.items():
            matches = pattern.endswith("*") and model.startswith(pattern[:-1])
            if matches and (best is None or len(pattern) > best[0]):
                best = (len(pattern), price)
        return best[1] if best else self.default

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Cost:
        price = self.price(model)
        if price is None:
            if model not in self._warned and (prompt_tokens or completion_tokens):
                self._warned.add(model)
                log.warning(
                    "model has no price: its tokens are counted as unpriced and cost 0",
                    extra={"model": model, "price_table": self.source},
                )
            return Cost(0, priced=False)
        usd = (prompt_tokens * price.prompt + completion_tokens * price.completion) / PER_TOKENS
        return Cost(round(usd * NANO), priced=True)

    @classmethod
    def from_mapping(cls, data: object, source: str) -> PriceTable:
        try:
            parsed = _TableFile.model_validate(data if data is not None else {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'table'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"price table {source}: {problems}") from None
        return cls(dict(parsed.models), parsed.default, source)

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        """The table at `path` (AGENTMESH_PRICE_TABLE), or the built-in one when None."""
        if path is None:
            return builtin_prices()
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"AGENTMESH_PRICE_TABLE: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"AGENTMESH_PRICE_TABLE: {path} is not valid YAML: {exc}") from None
        return cls.from_mapping(data, str(path))


# Public list prices (USD per 1M tokens) of a few hosted models, as a starting
# point; prices change, so production accounting should set its own table.
BUILTIN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}


def builtin_prices() -> PriceTable:
    return PriceTable(
        {name: Price(prompt=p, completion=c) for name, (p, c) in BUILTIN_PRICES.items()}, None, "built-in"
    )

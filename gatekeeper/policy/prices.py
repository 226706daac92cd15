"""The top-level ``prices`` section: dollars per million tokens, per model.

    prices:
      gpt-4o: {input: 2.50, output: 10.00}
      "gpt-4o-mini*": {input: 0.15, output: 0.60}   # fnmatch patterns (* ? [..]) allowed
      default: {input: 5.00, output: 15.00}          # any other model

``default`` is required when any tenant limits spend (``daily_spend``/``monthly_spend``):
otherwise a request for an unpriced model would cost nothing (``policy/load.py`` checks).
"""

from __future__ import annotations

from collections.abc import Mapping

from gatekeeper.limits.spend import NO_PRICES, Price, Prices, scaled_price
from gatekeeper.policy.fields import Fields

MAX_PRICE = 1_000_000.0
"""Dollars per million tokens: a larger price is a typo."""
_GLOB = "*?["


def load_prices(fields: Fields) -> Prices:
    exact: dict[str, Price] = {}
    globs: list[tuple[str, Price]] = []
    default: Price | None = None
    for name, value in fields.items():
        if not isinstance(value, Mapping):
            fields.error(name, value, "must be a mapping like {input: 2.50, output: 10.00}")
            continue
        price = _price(Fields(value, fields.field(name), fields.errors))
        if name == "default":
            default = price
        elif any(c in name for c in _GLOB):
            globs.append((name, price))
        else:
            exact[name] = price
    if not exact and not globs and default is None:
        return NO_PRICES
    return Prices(exact, tuple(globs), default)


def _price(fields: Fields) -> Price:
    prompt = fields.number("input", 0.0, 0.0, MAX_PRICE) if fields.has("input") else \
        _missing(fields, "input")
    completion = fields.number("output", 0.0, 0.0, MAX_PRICE) if fields.has("output") else \
        _missing(fields, "output")
    fields.finish()
    return Price(scaled_price(prompt), scaled_price(completion))


def _missing(fields: Fields, name: str) -> float:
    fields.get(name, (int, float))  # records "is required"
    return 0.0

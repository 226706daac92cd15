"""What a request costs in money: a price table per model, and spend in micro-dollars.

A price is dollars per million tokens, so one token at ``$p``/M costs exactly ``p``
micro-dollars: spend is counted in whole micro-dollars (1e-6 USD), rounded up per request,
and every spend counter is an integer like every other counter. Prices are kept as integers
too (millionths of a micro-dollar per token), so ``spend_of`` never meets a float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import NamedTuple

SCALE = 1_000_000
"""A price of ``$p`` per million tokens is held as ``round(p * SCALE)`` (pico-dollars/token)."""


class Price(NamedTuple):
    prompt: int
    """Input tokens, scaled (``SCALE``)."""
    completion: int
    """Output tokens, scaled."""


@dataclass(frozen=True, slots=True)
class Prices:
    exact: Mapping[str, Price] = field(default_factory=dict)
    globs: tuple[tuple[str, Price], ...] = ()
    """``gpt-4o-mini*``-style patterns, tried in the policy's order after the exact names."""
    default: Price | None = None
    """For a model no name or pattern matches; required once any limit counts spend."""

    @property
    def empty(self) -> bool:
        return not self.exact and not self.globs and self.default is None


NO_PRICES = Prices()


def price_for(prices: Prices, model: str) -> Price | None:
    found = prices.exact.get(model)
    if found is not None:
        return found
    for pattern, price in prices.globs:
        if fnmatchcase(model, pattern):
            return price
    return prices.default


def spend_of(prices: Prices, model: str, prompt_tokens: int, completion_tokens: int) -> int:
    """Micro-dollars, rounded up: a request never costs less than its tokens are worth. A
    model without a price (and no ``default``) costs 0: the policy loader refuses spend limits
    without a default, so this only happens where spend is not limited."""
    price = price_for(prices, model)
    if price is None:
        return 0
    scaled = max(0, prompt_tokens) * price.prompt + max(0, completion_tokens) * price.completion
    return -(-scaled // SCALE)


def scaled_price(dollars_per_million: float | int) -> int:
    return round(dollars_per_million * SCALE)

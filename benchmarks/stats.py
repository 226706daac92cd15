"""Medians over rounds, and paired differences: each value against its baseline's value from
the same round.

On a shared 2-core machine a round can run 30% slow for everyone in it. The difference of two
medians mixes rounds (a slow round for the scenario, a fast one for its baseline); the median
of per-round differences does not: both numbers of a pair were measured within seconds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    def cells(self, digits: int = 2) -> list[str]:
        return [f"{self.median:.{digits}f}", f"{self.low:.{digits}f}", f"{self.high:.{digits}f}"]


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no values")
    return Spread(statistics.median(values), min(values), max(values))


@dataclass(frozen=True)
class Paired:
    """``added``: median over rounds of (value - baseline of that round); ``low``/``high``:
    the smallest and largest of those differences; ``ratio``: median of value / baseline."""

    added: float
    low: float
    high: float
    ratio: float

    def added_cell(self, digits: int = 2) -> str:
        return f"{self.added:+.{digits}f}"

    def range_cell(self, digits: int = 2) -> str:
        return f"{self.low:+.{digits}f} .. {self.high:+.{digits}f}"


def paired(values: Sequence[float], baseline: Sequence[float]) -> Paired:
    if len(values) != len(baseline) or not values:
        raise ValueError(f"cannot pair {len(values)} values with {len(baseline)}")
    diffs = [v - b for v, b in zip(values, baseline, strict=True)]
    ratios = [v / b for v, b in zip(values, baseline, strict=True) if b]
    return Paired(statistics.median(diffs), min(diffs), max(diffs),
                  statistics.median(ratios) if ratios else float("nan"))

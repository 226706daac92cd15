"""Impossible travel: the speed a key would have needed between two consecutive uses.

Pure functions over plain data. A location's point is its City coordinates when a file gave
them, else its country's representative point (``country_points.txt``, shipped in the
package). A pair is never counted when both uses are in one country (country points cannot
tell two cities apart, and city databases jitter), when the countries are land neighbours (a
border town, a mobile network that roams across it), or when the points are closer than
``min_km``. Above that, ``distance / elapsed`` over ``max_kmh`` is impossible travel: a
signal for the resale score, and a refusal for a tenant that makes it a hard rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import NamedTuple

from gatekeeper.geo.location import Location

DENY, FLAG = "deny", "flag"
ACTIONS = (DENY, FLAG)
EARTH_KM = 6371.0088
"""The mean Earth radius (IUGG)."""


@dataclass(frozen=True, slots=True, eq=False)
class TravelRule:
    max_kmh: float = 900.0
    """About an airliner's cruising speed: faster than this between two uses is not a person."""
    action: str = FLAG
    """``deny`` refuses the later request (``impossible_travel``); ``flag`` lets it through,
    marked with the ``impossible_travel`` signal."""
    min_km: float = 100.0
    """Closer than this never counts: city databases place one city's addresses kilometres
    apart."""


class Sighting(NamedTuple):
    """Where and when a key was last used: what the location store keeps per key."""

    country: str | None
    latitude: float
    longitude: float
    at: float


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + \
        math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def sighting(location: Location, now: float) -> Sighting | None:
    """The point of ``location`` at ``now``; None when it has neither coordinates nor a
    country with a point (nothing to measure from)."""
    if location.latitude is not None and location.longitude is not None:
        return Sighting(location.country, location.latitude, location.longitude, now)
    if location.country is None:
        return None
    point = country_points().get(location.country)
    if point is None:
        return None
    return Sighting(location.country, point[0], point[1], now)


def speed_kmh(before: Sighting, after: Sighting, rule: TravelRule) -> float | None:
    """The speed between two sightings, or None when the pair does not count (same or
    neighbouring countries, closer than ``rule.min_km``). Two uses at the same instant (or
    out of order, across processes) count as one second apart."""
    a, b = before.country, after.country
    if a is not None and b is not None and (a == b or b in neighbours().get(a, ())):
        return None
    km = haversine_km(before.latitude, before.longitude, after.latitude, after.longitude)
    if km < rule.min_km:
        return None
    return km / (max(after.at - before.at, 1.0) / 3600.0)


def impossible(before: Sighting | None, after: Sighting, rule: TravelRule) -> float | None:
    """The speed when it is above ``rule.max_kmh``, else None."""
    if before is None:
        return None
    speed = speed_kmh(before, after, rule)
    return speed if speed is not None and speed > rule.max_kmh else None


@cache
def _table() -> tuple[dict[str, tuple[float, float]], dict[str, frozenset[str]]]:
    points: dict[str, tuple[float, float]] = {}
    near: dict[str, set[str]] = {}
    text = files("gatekeeper.geo").joinpath("country_points.txt").read_text("utf-8")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        code, lat, lon, others = line.split()
        points[code] = (float(lat), float(lon))
        for other in others.split(",") if others != "-" else ():
            near.setdefault(code, set()).add(other)
            near.setdefault(other, set()).add(code)  # symmetric whatever the source says
    return points, {code: frozenset(found) for code, found in near.items()}


def country_points() -> dict[str, tuple[float, float]]:
    """Country code -> (latitude, longitude) of its representative point; read once."""
    return _table()[0]


def neighbours() -> dict[str, frozenset[str]]:
    """Country code -> the countries it shares a land border with; read once."""
    return _table()[1]

"""Impossible travel as pure functions: realistic pairs, the skips, the shipped country points."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gatekeeper.geo.countries import COUNTRIES
from gatekeeper.geo.location import CDN_HEADER, EMBEDDED, MMDB, Location
from gatekeeper.geo.travel import (
    Sighting,
    TravelRule,
    country_points,
    haversine_km,
    impossible,
    neighbours,
    sighting,
    speed_kmh,
)

RULE = TravelRule()
HOUR = 3600.0
NEW_YORK = Location("US", latitude=40.7128, longitude=-74.0060, source=MMDB)
LONDON = Location("GB", latitude=51.5074, longitude=-0.1278, source=MMDB)
FRANKFURT = Location("DE", latitude=50.1109, longitude=8.6821, source=MMDB)
SAO_PAULO = Location("BR", latitude=-23.5505, longitude=-46.6333, source=MMDB)
FRANKFURT_EAST = Location("DE", latitude=50.1213, longitude=8.7390, source=MMDB)


def _pair(a: Location, b: Location, seconds: float) -> float | None:
    before, after = sighting(a, 0.0), sighting(b, seconds)
    assert before is not None and after is not None
    return impossible(before, after, RULE)


def test_haversine_new_york_to_london() -> None:
    km = haversine_km(40.7128, -74.0060, 51.5074, -0.1278)
    assert 5560 < km < 5580
    assert haversine_km(10.0, 20.0, 10.0, 20.0) == 0.0


def test_new_york_then_london_eight_hours_later_passes() -> None:
    assert _pair(NEW_YORK, LONDON, 8 * HOUR) is None
    assert _pair(NEW_YORK, LONDON, 3 * HOUR) is not None  # no airliner does it in three


def test_frankfurt_then_sao_paulo_five_minutes_later_does_not() -> None:
    speed = _pair(FRANKFURT, SAO_PAULO, 300)
    assert speed is not None and speed > 100_000


def test_two_addresses_of_one_city_do_not() -> None:
    assert _pair(FRANKFURT, FRANKFURT_EAST, 1) is None


def test_the_distance_floor_holds_without_countries() -> None:
    near = Sighting(None, 50.0, 8.0, 0.0)
    assert speed_kmh(near, Sighting(None, 50.5, 8.0, 1.0), RULE) is None  # ~56 km
    assert speed_kmh(near, Sighting(None, 52.0, 8.0, 1.0), RULE) is not None  # ~222 km


def test_same_and_neighbouring_countries_are_skipped_on_country_points() -> None:
    de, fr, es = Location("DE", source=EMBEDDED), Location("FR", source=EMBEDDED), \
        Location("ES", source=EMBEDDED)
    assert _pair(de, de, 1) is None
    assert _pair(de, fr, 1) is None  # neighbours
    assert _pair(de, es, 60) is not None  # not neighbours, ~1,400 km in a minute


def test_country_points_stand_in_for_missing_coordinates() -> None:
    found = sighting(Location("US", source=CDN_HEADER), 5.0)
    assert found is not None and (found.country, found.at) == ("US", 5.0)
    assert (found.latitude, found.longitude) == country_points()["US"]
    assert sighting(Location(None), 0.0) is None
    assert sighting(Location("AQ"), 0.0) is None  # no point shipped for Antarctica


def test_same_instant_counts_as_one_second() -> None:
    before, after = sighting(FRANKFURT, 10.0), sighting(SAO_PAULO, 9.0)
    assert before is not None and after is not None
    assert speed_kmh(before, after, RULE) == pytest.approx(
        haversine_km(50.1109, 8.6821, -23.5505, -46.6333) * 3600)


def test_every_country_but_six_has_a_point_and_borders_are_symmetric() -> None:
    assert COUNTRIES - set(country_points()) == {"AQ", "BV", "HM", "IO", "TK", "UM"}
    near = neighbours()
    assert {"AT", "FR", "PL"} <= near["DE"] and "DE" in near["FR"]
    assert all(code in near[other] for code, others in near.items() for other in others)
    for lat, lon in country_points().values():
        assert -90 <= lat <= 90 and -180 <= lon <= 180


def test_the_data_file_ships_in_the_wheel() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "geo/*.txt" in project["tool"]["setuptools"]["package-data"]["gatekeeper"]

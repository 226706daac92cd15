"""Operator-supplied MaxMind-format files, read with ``maxminddb`` (its C extension).

One reader understands every layout we support, whatever the file is called in the policy:

- GeoLite2 / GeoIP2 Country and City, DB-IP Lite Country and City: ``country.iso_code``
  (else ``registered_country.iso_code``), ``location.latitude`` / ``location.longitude``;
- GeoLite2-ASN: ``autonomous_system_number``, ``autonomous_system_organization``;
- IPinfo Lite (flat): ``country_code``, ``asn: "AS174"``, ``as_name``.

Values are checked (two letters, an ASN in 32 bits, finite coordinates in range): a damaged or
unexpected file yields "unknown", never an exception on the request path. ``reload`` opens the
new file first and replaces the reader in one assignment, so a lookup running meanwhile sees
the old file or the new one, never neither. Files are memory-mapped (``maxminddb``'s default):
replace a file by renaming the new one over it (what ``geoipupdate`` does), never by writing
into it in place, which changes the pages under a live reader.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import maxminddb

from gatekeeper.errors import ConfigError
from gatekeeper.geo.location import MMDB, Location
from gatekeeper.networks import IPAddr

log = logging.getLogger("gatekeeper")

DAY = 86_400.0


class Record(NamedTuple):
    """What one file said about one address; None where it said nothing usable."""

    country: str | None = None
    asn: int | None = None
    as_name: str | None = None
    latitude: float | None = None
    longitude: float | None = None


NOTHING = Record()


class MmdbFile:
    """One ``.mmdb`` file; ``field`` names it in errors and warnings (``geo.files.city``)."""

    __slots__ = ("_clock", "_reader", "field", "max_age_days", "path")

    def __init__(self, path: str | os.PathLike[str], field: str = "geo.files",
                 max_age_days: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.field = field
        self.max_age_days = max_age_days
        self._clock = clock
        self.path = os.fspath(path)
        self._reader = self._open(self.path)

    def _open(self, path: str) -> maxminddb.Reader:
        try:
            reader = maxminddb.open_database(path)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(self.field, path, f"cannot be read as a MaxMind DB file: {exc}") \
                from exc
        age = self._clock() - reader.metadata().build_epoch
        if self.max_age_days is not None and age > self.max_age_days * DAY:
            log.warning("%s: %s was built %.0f days ago (more than geo.max_age_days=%g): "
                        "its answers may be out of date", self.field, path, age / DAY,
                        self.max_age_days)
        return reader

    @property
    def build_epoch(self) -> int:
        return int(self._reader.metadata().build_epoch)

    def reload(self, path: str | os.PathLike[str] | None = None) -> None:
        """Open ``path`` (default: the same path, e.g. after an update replaced the file) and
        swap it in; on error the old reader stays and ``ConfigError`` says why."""
        new_path = self.path if path is None else os.fspath(path)
        reader = self._open(new_path)
        old, self._reader, self.path = self._reader, reader, new_path
        old.close()

    def close(self) -> None:
        self._reader.close()

    def get(self, addr: IPAddr) -> Record:
        try:
            raw = self._reader.get(addr.text)
        except ValueError:  # closed under us by a reload, or an address it cannot hold
            try:
                raw = self._reader.get(addr.text)
            except ValueError:
                return NOTHING
        return parse_record(raw) if isinstance(raw, Mapping) else NOTHING


def parse_record(raw: Mapping[str, Any]) -> Record:
    """Any supported layout to a ``Record``; a value of the wrong shape counts as absent."""
    country = _country(_at(raw, "country", "iso_code")) or _country(raw.get("country_code")) \
        or _country(_at(raw, "registered_country", "iso_code"))
    asn = _asn(raw.get("autonomous_system_number"))
    if asn is None:
        asn = _asn(raw.get("asn"))
    as_name = _text(raw.get("autonomous_system_organization")) or _text(raw.get("as_name"))
    lat = _coordinate(_at(raw, "location", "latitude"), 90.0)
    lon = _coordinate(_at(raw, "location", "longitude"), 180.0)
    if lat is None or lon is None:
        lat = lon = None
    return Record(country, asn, as_name, lat, lon)


def merge(files: tuple[MmdbFile, ...], addr: IPAddr) -> Location | None:
    """Every file's record for ``addr``, the first file to know a field winning it."""
    country = asn = as_name = lat = lon = None
    for file in files:
        r = file.get(addr)
        country = country or r.country
        if asn is None and r.asn is not None:
            asn, as_name = r.asn, r.as_name
        if lat is None and r.latitude is not None:
            lat, lon = r.latitude, r.longitude
    if country is None and asn is None and lat is None:
        return None
    return Location(country, asn, as_name, lat, lon, MMDB)


def _at(raw: Mapping[str, Any], outer: str, inner: str) -> object:
    part = raw.get(outer)
    return part.get(inner) if isinstance(part, Mapping) else None


def _country(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()
    return None


def _asn(value: object) -> int | None:
    if isinstance(value, str) and value[:2].upper() == "AS" and value[2:].isdigit() \
            and len(value) <= 12:
        value = int(value[2:])
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**32:
        return value
    return None


def _text(value: object) -> str | None:
    return value[:200] if isinstance(value, str) and value else None


def _coordinate(value: object, bound: float) -> float | None:
    if isinstance(value, int) and not isinstance(value, bool) and -bound <= value <= bound:
        return float(value)
    if isinstance(value, float) and math.isfinite(value) and -bound <= value <= bound:
        return value
    return None

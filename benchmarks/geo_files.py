"""``.mmdb`` files for the geo stage rows, written once per run into a temporary directory.

Records have the shape of real GeoLite2 ones (names in eight languages, subdivisions, postal
code), since ``maxminddb`` decodes the whole record and its cost grows with it; the trees are
tiny, so the walk is shorter than in a 60 MB City file (at most 32 steps for IPv4 either way).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MmdbU32, MMDBWriter
from netaddr import IPSet

ADDRESS = "8.8.8.8"
ADDRESS_V6 = "2001:4860:4860::8888"
LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")


def _names(name: str) -> dict[str, str]:
    return {lang: name for lang in LANGUAGES}


def _country(iso: str) -> dict[str, Any]:
    return {"geoname_id": MmdbU32(6252001), "iso_code": iso, "names": _names("United States")}


CITY_RECORD: dict[str, Any] = {
    "city": {"geoname_id": MmdbU32(5375480), "names": _names("Mountain View")},
    "continent": {"code": "NA", "geoname_id": MmdbU32(6255149),
                  "names": _names("North America")},
    "country": _country("US"),
    "location": {"accuracy_radius": MmdbU32(1000), "latitude": MmdbF64(37.386),
                  "longitude": MmdbF64(-122.0838), "metro_code": MmdbU32(807),
                  "time_zone": "America/Los_Angeles"},
    "postal": {"code": "94035"},
    "registered_country": _country("US"),
    "subdivisions": [{"geoname_id": MmdbU32(5332921), "iso_code": "CA",
                      "names": _names("California")}],
}
COUNTRY_RECORD: dict[str, Any] = {key: CITY_RECORD[key] for key in
                                  ("continent", "country", "registered_country")}


def _write(path: Path, record: dict[str, Any], kind: str) -> str:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=kind)
    writer.insert_network(IPSet(["8.8.8.0/24", "1.0.0.0/24", "203.0.113.0/24"]), record)
    writer.to_db_file(str(path))
    return str(path)


@functools.cache
def write_files() -> tuple[str, str]:
    """(country file, city file), removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="gatekeeper-geo-bench-"))
    atexit.register(shutil.rmtree, folder, True)
    return (_write(folder / "country.mmdb", COUNTRY_RECORD, "GeoLite2-Country"),
            _write(folder / "city.mmdb", CITY_RECORD, "GeoLite2-City"))

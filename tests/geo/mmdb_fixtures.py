"""Small ``.mmdb`` files in the layouts gatekeeper reads, on documentation addresses only
(RFC 5737, RFC 3849) and private-use ASNs (64496-64511)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MmdbU32, MMDBWriter
from netaddr import IPSet

FRANKFURT = (50.1109, 8.6821)
PARIS = (48.8566, 2.3522)


class _Writer(MMDBWriter):
    """Writes a chosen build epoch, so a test can make a file that looks stale."""

    def __init__(self, build_epoch: int | None, database_type: str) -> None:
        super().__init__(ip_version=6, ipv4_compatible=True, database_type=database_type)
        self._epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        if self._epoch is not None:
            meta["build_epoch"] = MmdbU32(self._epoch)
        return meta


def write(path: Path, networks: dict[str, dict[str, Any]], database_type: str = "Test",
          build_epoch: int | None = None) -> Path:
    writer = _Writer(build_epoch, database_type)
    for cidr, record in networks.items():
        writer.insert_network(IPSet([cidr]), record)
    writer.to_db_file(str(path))
    return path


def city(lat: float, lon: float, iso: str) -> dict[str, Any]:
    return {"country": {"iso_code": iso, "names": {"en": iso}},
            "location": {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon)}}


def geolite2_country(path: Path, build_epoch: int | None = None) -> Path:
    """GeoLite2-Country layout: 192.0.2.0/24 DE, 2001:db8::/32 FR, 203.0.113.0/24 has only a
    registered country (as anonymous networks do)."""
    return write(path, {
        "192.0.2.0/24": {"country": {"iso_code": "DE"}, "continent": {"code": "EU"}},
        "2001:db8::/32": {"country": {"iso_code": "FR"}},
        "203.0.113.0/24": {"registered_country": {"iso_code": "NL"}},
    }, "GeoLite2-Country", build_epoch)


def geolite2_city(path: Path, build_epoch: int | None = None) -> Path:
    """GeoLite2-City (and DB-IP Lite City) layout: 192.0.2.0/24 Frankfurt, 198.51.100.0/24 Paris."""
    return write(path, {
        "192.0.2.0/24": city(*FRANKFURT, "DE"),
        "198.51.100.0/24": city(*PARIS, "FR"),
    }, "GeoLite2-City", build_epoch)


def geolite2_asn(path: Path, build_epoch: int | None = None) -> Path:
    return write(path, {
        "192.0.2.0/24": {"autonomous_system_number": MmdbU32(64496),
                         "autonomous_system_organization": "Example Transit"},
        "198.51.100.0/24": {"autonomous_system_number": MmdbU32(64511),
                            "autonomous_system_organization": "Example Cloud"},
    }, "GeoLite2-ASN", build_epoch)


def ipinfo_lite(path: Path, build_epoch: int | None = None) -> Path:
    """IPinfo Lite's flat layout: country and ASN in one record, the ASN as ``"AS64500"``."""
    return write(path, {
        "198.51.100.0/24": {"country_code": "JP", "country": "Japan", "asn": "AS64500",
                            "as_name": "Example Lite", "as_domain": "example.net"},
        "2001:db8::/32": {"country_code": "BR", "asn": "AS64501", "as_name": "Example V6"},
    }, "ipinfo_lite.mmdb", build_epoch)

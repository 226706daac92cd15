"""The ``geo`` section (where locations come from), a tenant's ``countries`` and ``travel``
rules.

    geo:
      files: {city: GeoLite2-City.mmdb, asn: GeoLite2-ASN.mmdb}   # optional; relative to
      max_age_days: 45                                            # the policy file
      cdn_header: cf-ipcountry                                    # optional
    tenants:
      acme:
        countries: {allow: [DE, FR], deny: [], unknown: deny}
        travel: {max_kmh: 900, action: deny, min_km: 100}         # impossible travel

Without ``files`` the embedded default (``iptocc``) answers. Files are not opened here: a
policy is often checked on another machine than the one that serves it; ``GeoResolver``
opens them, and names the field when one cannot be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gatekeeper.geo.countries import COMMON_MISTAKES, COUNTRIES
from gatekeeper.geo.rules import UNKNOWN_CHOICES, CountryRule
from gatekeeper.geo.travel import ACTIONS, TravelRule
from gatekeeper.policy.fields import Fields

FILE_KINDS = ("city", "country", "asn")
"""Asked in this order for each field; the first file to know it wins."""
DEFAULT_MAX_AGE_DAYS = 45.0
"""GeoLite2 is rebuilt twice a week and DB-IP Lite monthly: older than this, it was missed."""
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,64}")


@dataclass(frozen=True, slots=True)
class GeoPolicy:
    files: tuple[tuple[str, str], ...] = ()
    """(field, path) pairs in lookup order, e.g. ``("geo.files.city", "/data/city.mmdb")``."""
    max_age_days: float = DEFAULT_MAX_AGE_DAYS
    cdn_header: str | None = None


def load_geo(fields: Fields, directory: Path | None = None) -> GeoPolicy:
    files_section = fields.section("files")
    files = []
    for kind in FILE_KINDS:
        path = files_section.get(kind, str, None)
        if path is None:
            continue
        if not path.strip():
            files_section.error(kind, path, "must be a file path")
            continue
        if directory is not None and not Path(path).is_absolute():
            path = str(directory / path)
        files.append((files_section.field(kind), path))
    files_section.finish()
    max_age = fields.number("max_age_days", DEFAULT_MAX_AGE_DAYS, minimum=1.0)
    header = fields.get("cdn_header", str, None)
    if header is not None:
        header = header.strip().lower()
        if not _HEADER_NAME.fullmatch(header):
            fields.error("cdn_header", header, "is not a header name")
            header = None
    fields.finish()
    return GeoPolicy(tuple(files), max_age, header)


def load_country_rule(fields: Fields) -> CountryRule:
    allow = _codes(fields, "allow")
    deny = _codes(fields, "deny")
    for i, code in deny.items():
        if code in allow.values():
            fields.error(f"deny[{i}]", code, "is also in allow")
    unknown = fields.choice("unknown", UNKNOWN_CHOICES, "allow")
    fields.finish()
    return CountryRule(frozenset(allow.values()), frozenset(deny.values()), unknown)


def load_travel_rule(fields: Fields) -> TravelRule:
    default = TravelRule()
    max_kmh = fields.number("max_kmh", default.max_kmh, minimum=1.0, maximum=1e6)
    min_km = fields.number("min_km", default.min_km, minimum=0.0, maximum=20_000.0)
    action = fields.choice("action", ACTIONS, default.action)
    fields.finish()
    return TravelRule(max_kmh, action, min_km)


def country_problem(item: object) -> str | None:
    """Why ``item`` is not a country code a rule may name; None when it is one. Shared by
    the policy and ``gatekeeper keys --country``."""
    code = item.strip().upper() if isinstance(item, str) else None
    if code in COUNTRIES:
        return None
    if item is False:  # YAML 1.1 reads a bare NO (Norway) as false
        return "is YAML's false: write 'NO' in quotes for Norway"
    if code in COMMON_MISTAKES:
        return f"is not an ISO 3166-1 code (did you mean {COMMON_MISTAKES[code]}?)"
    return "is not an ISO 3166-1 alpha-2 country code"


def _codes(fields: Fields, name: str) -> dict[int, str]:
    raw = fields.get(name, (list, str), [], "a list of country codes")
    if isinstance(raw, str):
        raw = [raw]
    codes: dict[int, str] = {}
    for i, item in enumerate(raw):
        problem = country_problem(item)
        if problem is None:
            codes[i] = item.strip().upper()
        else:
            fields.error(f"{name}[{i}]", item, problem)
    return codes

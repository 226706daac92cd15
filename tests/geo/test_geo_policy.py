"""The ``geo`` section and a tenant's ``countries``: every error names its field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatekeeper.errors import PolicyError
from gatekeeper.geo.rules import CountryRule
from gatekeeper.policy.geo import DEFAULT_MAX_AGE_DAYS, GeoPolicy
from gatekeeper.policy.load import compile_policy, load_policy


def errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(PolicyError) as err:
        compile_policy(data)
    return {e.field: e.problem for e in err.value.errors}


def test_defaults_cost_nothing() -> None:
    policy = compile_policy({"tenants": {"acme": {}}})
    assert policy.geo == GeoPolicy()
    assert policy.tenants["acme"].countries is None


def test_a_full_geo_section(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        "client_address: {trusted_proxies: [203.0.113.250/32]}\n"
        "geo:\n  files: {asn: data/asn.mmdb, city: /abs/city.mmdb}\n"
        "  max_age_days: 10\n  cdn_header: CF-IPCountry\n"
        "tenants:\n  acme:\n    countries: {allow: [de, FR], deny: [RU], unknown: deny}\n")
    policy = load_policy(tmp_path / "policy.yaml")
    assert policy.geo.files == (("geo.files.city", "/abs/city.mmdb"),
                                ("geo.files.asn", str(tmp_path / "data/asn.mmdb")))
    assert (policy.geo.max_age_days, policy.geo.cdn_header) == (10, "cf-ipcountry")
    rule = policy.tenants["acme"].countries
    assert isinstance(rule, CountryRule)
    assert (rule.allow, rule.deny, rule.unknown) == (frozenset({"DE", "FR"}), frozenset({"RU"}),
                                                     "deny")
    assert compile_policy({}).geo.max_age_days == DEFAULT_MAX_AGE_DAYS


def test_country_errors_name_the_field() -> None:
    found = errors({"tenants": {"acme": {"countries": {
        "allow": ["DE", "UK", "Germany", 7, "FR"], "deny": ["FR"], "unknown": "maybe",
        "alow": ["DE"]}}}})
    assert found == {
        "tenants.acme.countries.allow[1]": "is not an ISO 3166-1 code (did you mean GB?)",
        "tenants.acme.countries.allow[2]": "is not an ISO 3166-1 alpha-2 country code",
        "tenants.acme.countries.allow[3]": "is not an ISO 3166-1 alpha-2 country code",
        "tenants.acme.countries.deny[0]": "is also in allow",
        "tenants.acme.countries.unknown": "must be one of allow, deny, flag",
        "tenants.acme.countries.alow": "is not a known field (did you mean allow?)",
    }


def test_yaml_no_for_norway_is_explained(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        "tenants:\n  acme:\n    countries: {allow: [NO, SE]}\n")
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "policy.yaml")
    assert "tenants.acme.countries.allow[0]" in str(err.value)
    assert "'NO' in quotes" in str(err.value)
    (tmp_path / "policy.yaml").write_text(
        "tenants:\n  acme:\n    countries: {allow: ['NO', SE]}\n")
    rule = load_policy(tmp_path / "policy.yaml").tenants["acme"].countries
    assert rule is not None and rule.allow == {"NO", "SE"}


def test_geo_section_errors_name_the_field() -> None:
    found = errors({"geo": {"files": {"city": "", "region": "x.mmdb", "asn": 3},
                            "max_age_days": 0, "cdn_header": "cf ipcountry",
                            "cdn_heder": "x"}})
    assert found == {
        "geo.files.city": "must be a file path",
        "geo.files.asn": "must be a string",
        "geo.files.region": "is not a known field",
        "geo.max_age_days": "must be at least 1",
        "geo.cdn_header": "is not a header name",
        "geo.cdn_heder": "is not a known field (did you mean cdn_header?)",
    }


def test_a_cdn_header_without_trusted_proxies_is_an_error() -> None:
    found = errors({"geo": {"cdn_header": "cf-ipcountry"}})
    assert found == {"geo.cdn_header":
                     "is never believed without client_address.trusted_proxies"}


def test_a_travel_rule_and_its_defaults() -> None:
    policy = compile_policy({"tenants": {
        "acme": {"travel": {"max_kmh": 1200, "action": "deny", "min_km": 50}},
        "globex": {"travel": {}}, "initech": {}}})
    acme = policy.tenants["acme"].travel
    assert acme is not None and (acme.max_kmh, acme.action, acme.min_km) == (1200, "deny", 50)
    globex = policy.tenants["globex"].travel
    assert globex is not None and (globex.max_kmh, globex.action, globex.min_km) == \
        (900, "flag", 100)
    assert policy.tenants["initech"].travel is None


def test_travel_errors_name_the_field() -> None:
    found = errors({"tenants": {"acme": {"travel": {
        "max_kmh": -5, "action": "block", "min_km": "far", "speed": 3}}}})
    assert found == {
        "tenants.acme.travel.max_kmh": "must be between 1 and 1e+06",
        "tenants.acme.travel.action": "must be one of deny, flag",
        "tenants.acme.travel.min_km": "must be a number",
        "tenants.acme.travel.speed": "is not a known field",
    }

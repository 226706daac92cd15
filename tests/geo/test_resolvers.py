"""Each resolver on real files built by the tests, the chain's order, the CDN trust rule, the
cache bound and a file swapped at runtime."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mmdb_writer import MmdbF64, MmdbU32, MMDBWriter
from netaddr import IPSet

from gatekeeper.errors import ConfigError
from gatekeeper.facts import FactReader
from gatekeeper.geo.cdn import HIDDEN, CdnCountry, country_from_value
from gatekeeper.geo.embedded import EmbeddedResolver
from gatekeeper.geo.location import CDN_HEADER, EMBEDDED, MMDB, NOWHERE, network_group
from gatekeeper.geo.mmdb import MmdbFile
from gatekeeper.geo.resolver import GeoResolver
from gatekeeper.networks import IPAddr, parse_ip
from gatekeeper.policy.load import compile_policy
from tests.geo import mmdb_fixtures as fx

DAY = 86_400


def ip(text: str) -> IPAddr:
    addr = parse_ip(text)
    assert addr is not None
    return addr


# --- network grouping ---------------------------------------------------------------------------

def test_network_group_is_the_asn_else_the_24_or_48() -> None:
    assert network_group(ip("192.0.2.77"), 64496) == "AS64496"
    assert network_group(ip("192.0.2.77")) == "192.0.2.0/24"
    assert network_group(ip("2001:db8:abcd:12::1")) == "2001:db8:abcd::/48"
    assert network_group(ip("::ffff:198.51.100.9")) == "198.51.100.0/24"


# --- embedded -----------------------------------------------------------------------------------

def test_embedded_answers_ipv4_and_ipv6_without_a_file() -> None:
    embedded = EmbeddedResolver()
    v4, v6 = embedded.lookup(ip("8.8.8.8")), embedded.lookup(ip("2001:4860:4860::8888"))
    assert v4 is not None and v4.country == "US" and v4.source == EMBEDDED
    assert v6 is not None and v6.country == "US"
    assert embedded.lookup(ip("192.0.2.1")) is None  # documentation space: nobody's country
    assert embedded.lookup(ip("10.1.2.3")) is None


# --- mmdb layouts -------------------------------------------------------------------------------

def test_geolite2_country_layout(tmp_path: Path) -> None:
    f = MmdbFile(fx.geolite2_country(tmp_path / "c.mmdb"))
    assert f.get(ip("192.0.2.9")).country == "DE"
    assert f.get(ip("2001:db8::5")).country == "FR"
    assert f.get(ip("203.0.113.5")).country == "NL"  # registered_country when no country
    assert f.get(ip("198.51.100.1")).country is None


def test_geolite2_city_layout_has_coordinates(tmp_path: Path) -> None:
    f = MmdbFile(fx.geolite2_city(tmp_path / "city.mmdb"))
    r = f.get(ip("192.0.2.9"))
    assert (r.country, r.latitude, r.longitude) == ("DE", *fx.FRANKFURT)


def test_geolite2_asn_layout(tmp_path: Path) -> None:
    f = MmdbFile(fx.geolite2_asn(tmp_path / "asn.mmdb"))
    r = f.get(ip("198.51.100.200"))
    assert (r.country, r.asn, r.as_name) == (None, 64511, "Example Cloud")


def test_ipinfo_lite_flat_layout(tmp_path: Path) -> None:
    f = MmdbFile(fx.ipinfo_lite(tmp_path / "lite.mmdb"))
    r = f.get(ip("198.51.100.7"))
    assert (r.country, r.asn, r.as_name) == ("JP", 64500, "Example Lite")
    assert f.get(ip("2001:db8:1::1")).asn == 64501


def test_values_of_the_wrong_shape_count_as_absent(tmp_path: Path) -> None:
    f = MmdbFile(fx.write(tmp_path / "odd.mmdb", {
        "192.0.2.0/24": {"country": {"iso_code": "Germany"}, "asn": "AS-bad",
                         "location": {"latitude": MmdbF64(91.0),
                                      "longitude": MmdbF64(8.0)}},
        "198.51.100.0/24": {"country_code": "de", "autonomous_system_number": 0},
    }))
    odd = f.get(ip("192.0.2.1"))
    assert (odd.country, odd.asn, odd.latitude, odd.longitude) == (None, None, None, None)
    lower = f.get(ip("198.51.100.1"))
    assert (lower.country, lower.asn) == ("DE", None)


def test_an_ipv4_only_file_knows_nothing_of_ipv6(tmp_path: Path) -> None:
    path = tmp_path / "v4.mmdb"
    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-Country")
    writer.insert_network(IPSet(["192.0.2.0/24"]), {"country": {"iso_code": "SE"}})
    writer.to_db_file(str(path))
    f = MmdbFile(path)
    assert f.get(ip("192.0.2.1")).country == "SE"
    assert f.get(ip("2001:db8::1")) == (None, None, None, None, None)


def test_importing_gatekeeper_loads_no_geo_library() -> None:
    code = ("import sys, gatekeeper, gatekeeper.geo, gatekeeper.policy.load; "
            "print(sorted({'maxminddb', 'iptocc'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_a_file_that_is_not_a_database_names_its_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a database")
    with pytest.raises(ConfigError) as err:
        MmdbFile(bad, "geo.files.city")
    assert err.value.field == "geo.files.city"
    with pytest.raises(ConfigError):
        MmdbFile(tmp_path / "missing.mmdb", "geo.files.asn")


def test_stale_file_warns_at_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = 2_000_000_000.0
    old = fx.geolite2_city(tmp_path / "old.mmdb", build_epoch=int(now - 60 * DAY))
    fresh = fx.geolite2_city(tmp_path / "fresh.mmdb", build_epoch=int(now - 2 * DAY))
    with caplog.at_level(logging.WARNING, "gatekeeper"):
        MmdbFile(fresh, "geo.files.city", 45, clock=lambda: now)
        assert caplog.records == []
        MmdbFile(old, "geo.files.city", 45, clock=lambda: now)
    assert len(caplog.records) == 1
    assert "geo.files.city" in caplog.text and "60 days" in caplog.text


# --- the chain ----------------------------------------------------------------------------------

def test_files_first_then_embedded_each_answer_with_its_source(tmp_path: Path) -> None:
    resolver = GeoResolver([MmdbFile(fx.geolite2_city(tmp_path / "city.mmdb")),
                            MmdbFile(fx.geolite2_asn(tmp_path / "asn.mmdb"))])
    frankfurt = resolver.lookup(ip("192.0.2.10"))
    assert frankfurt == (("DE", 64496, "Example Transit", *fx.FRANKFURT, MMDB, "AS64496"))
    google = resolver.lookup(ip("8.8.8.8"))  # not in the files: iptocc answers
    assert (google.country, google.source) == ("US", EMBEDDED)
    nowhere = resolver.lookup(ip("203.0.113.1"))
    assert (nowhere.country, nowhere.source) == (None, NOWHERE)


def test_an_asn_only_answer_keeps_its_asn_and_takes_the_embedded_country(
        tmp_path: Path) -> None:
    asn = fx.write(tmp_path / "asn.mmdb", {
        "8.8.8.0/24": {"autonomous_system_number": MmdbU32(64502)}})
    found = GeoResolver([MmdbFile(asn)]).lookup(ip("8.8.8.8"))
    assert (found.country, found.asn, found.source) == ("US", 64502, EMBEDDED)


def test_without_the_embedded_default_unknown_stays_unknown() -> None:
    assert GeoResolver(use_embedded=False).lookup(ip("8.8.8.8")).country is None


def test_first_file_to_know_a_field_wins(tmp_path: Path) -> None:
    lite = MmdbFile(fx.ipinfo_lite(tmp_path / "lite.mmdb"))
    city = MmdbFile(fx.geolite2_city(tmp_path / "city.mmdb"))
    paris = GeoResolver([lite, city]).lookup(ip("198.51.100.3"))
    # IPinfo says JP (first), the city file alone has coordinates
    assert (paris.country, paris.asn, paris.latitude) == ("JP", 64500, fx.PARIS[0])


# --- CDN header ---------------------------------------------------------------------------------

PROXY = ("203.0.113.250", 443)
CLIENT = ("203.0.113.9", 5000)


def _facts(peer: tuple[str, int], headers: list[tuple[bytes, bytes]]) -> tuple[bool, IPAddr]:
    policy = compile_policy({"client_address": {"trusted_proxies": ["203.0.113.250/32"]},
                             "geo": {"cdn_header": "cf-ipcountry"}})
    facts = FactReader(policy).read({"type": "http", "method": "GET", "path": "/v1/models",
                                     "headers": headers, "client": peer})
    assert facts.client is not None
    return facts.peer_trusted, facts.client


def test_cdn_header_is_believed_from_a_trusted_proxy() -> None:
    headers = [(b"x-forwarded-for", b"8.8.8.8"), (b"cf-ipcountry", b"de")]
    trusted, client = _facts(PROXY, headers)
    found = GeoResolver(cdn=CdnCountry("CF-IPCountry")).locate(client, headers, trusted)
    assert (found.country, found.source) == ("DE", CDN_HEADER)


def test_spoofed_cdn_header_from_an_untrusted_peer_changes_nothing() -> None:
    headers = [(b"cf-ipcountry", b"DE"), (b"x-forwarded-for", b"1.2.3.4")]
    trusted, client = _facts(("8.8.8.8", 5000), headers)
    assert not trusted and client.text == "8.8.8.8"
    resolver = GeoResolver(cdn=CdnCountry("cf-ipcountry"))
    found = resolver.locate(client, headers, trusted)
    assert found == resolver.lookup(ip("8.8.8.8"))
    assert (found.country, found.source) == ("US", EMBEDDED)


def test_cdn_special_and_malformed_values() -> None:
    assert country_from_value(b"T1") is HIDDEN  # Tor: unknown, and the address is not asked
    assert country_from_value(b"XX") is None  # no data: ask the address resolvers
    for bad in (b"", b"DEU", b"D1", b"\xc3\xa9\xc3\xa9", b"-"):
        assert country_from_value(bad) is None, bad
    resolver = GeoResolver(cdn=CdnCountry("cf-ipcountry"))
    tor = resolver.locate(ip("8.8.8.8"), [(b"cf-ipcountry", b"T1")], True)
    assert (tor.country, tor.source) == (None, CDN_HEADER)
    unknown_to_cdn = resolver.locate(ip("8.8.8.8"), [(b"cf-ipcountry", b"XX")], True)
    assert (unknown_to_cdn.country, unknown_to_cdn.source) == ("US", EMBEDDED)


def test_a_scanned_value_follows_the_same_trust_rule() -> None:
    resolver = GeoResolver(cdn=CdnCountry("cf-ipcountry"))
    assert resolver.locate_value(ip("8.8.8.8"), b"DE", True).country == "DE"
    assert resolver.locate_value(ip("8.8.8.8"), b"DE", False).country == "US"
    assert resolver.locate_value(None, b"DE", False).country is None
    # without a configured header, no value is believed, trusted peer or not
    assert GeoResolver().locate_value(ip("8.8.8.8"), b"DE", True).country == "US"


def test_two_different_cdn_headers_cancel_out() -> None:
    cdn = CdnCountry("cloudfront-viewer-country")
    headers = [(b"cloudfront-viewer-country", b"DE"), (b"cloudfront-viewer-country", b"FR")]
    assert cdn.read(headers, True) is None
    assert cdn.read(headers[:1] * 2, True) == b"DE"


def test_cdn_country_keeps_the_files_asn(tmp_path: Path) -> None:
    resolver = GeoResolver([MmdbFile(fx.geolite2_asn(tmp_path / "asn.mmdb"))],
                           cdn=CdnCountry("cf-ipcountry"))
    found = resolver.locate(ip("192.0.2.4"), [(b"cf-ipcountry", b"CH")], True)
    assert (found.country, found.asn, found.source) == ("CH", 64496, CDN_HEADER)


def test_every_answer_for_an_address_carries_its_network_group(tmp_path: Path) -> None:
    asn = GeoResolver([MmdbFile(fx.geolite2_asn(tmp_path / "asn.mmdb"))],
                      cdn=CdnCountry("cf-ipcountry"))
    assert asn.lookup(ip("192.0.2.4")).network == "AS64496"
    assert asn.locate_value(ip("192.0.2.4"), b"CH", True).network == "AS64496"
    assert asn.locate_value(ip("203.0.113.9"), b"CH", True).network == "203.0.113.0/24"
    plain = GeoResolver(cdn=CdnCountry("cf-ipcountry"))
    assert plain.lookup(ip("2001:db8:1:2::1")).network == "2001:db8:1::/48"
    assert plain.locate_value(ip("8.8.8.8"), b"DE", True).network == "8.8.8.0/24"
    assert plain.locate_value(ip("8.8.8.8"), b"T1", True).network == "8.8.8.0/24"
    assert plain.locate_value(None, b"DE", True).network is None


# --- cache and reload ---------------------------------------------------------------------------

def test_one_lookup_per_address_and_a_bounded_cache() -> None:
    resolver = GeoResolver(cache_size=3)
    resolver.lookup(ip("8.8.8.8"))
    assert ip("8.8.8.8") in resolver
    resolver.lookup(ip("8.8.4.0"))
    resolver.lookup(ip("8.8.8.8"))  # a hit does not move it: first in, first out
    for i in range(1, 10):
        resolver.lookup(ip(f"8.8.4.{i}"))
    assert len(resolver) == 3
    assert ip("8.8.8.8") not in resolver
    assert [ip(f"8.8.4.{i}") in resolver for i in (6, 7, 8, 9)] == [False, True, True, True]


def test_cache_eviction_stays_fast_under_churn() -> None:
    resolver = GeoResolver(cache_size=1000)
    addrs = [ip(f"10.{i >> 8 & 255}.{i & 255}.1") for i in range(20_000)]
    started = time.perf_counter()
    for a in addrs:
        resolver.lookup(a)
    assert len(resolver) == 1000
    assert time.perf_counter() - started < 2.0  # dict+next(iter) degrades to seconds here


def test_file_swapped_at_runtime(tmp_path: Path) -> None:
    path = fx.geolite2_country(tmp_path / "country.mmdb")
    resolver = GeoResolver([MmdbFile(path)])
    assert resolver.lookup(ip("192.0.2.1")).country == "DE"
    fx.write(tmp_path / "next.mmdb", {"192.0.2.0/24": {"country": {"iso_code": "AT"}}})
    (tmp_path / "next.mmdb").replace(path)  # how an updater replaces a file: rename
    resolver.reload()
    assert resolver.lookup(ip("192.0.2.1")).country == "AT"
    other = fx.write(tmp_path / "other.mmdb", {"192.0.2.0/24": {"country_code": "PL"}})
    resolver.reload([other])
    assert resolver.lookup(ip("192.0.2.1")).country == "PL"


def test_a_failed_reload_keeps_the_old_file(tmp_path: Path) -> None:
    resolver = GeoResolver([MmdbFile(fx.geolite2_country(tmp_path / "c.mmdb"))])
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"\0" * 64)
    with pytest.raises(ConfigError):
        resolver.reload([broken])
    assert resolver.lookup(ip("192.0.2.1")).country == "DE"

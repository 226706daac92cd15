"""Country rules and impossible travel through the middleware: every resolver, the trust rule
for CDN headers, allow / deny / unknown, a key narrowing its tenant, travel between uses.

Addresses: ``iptocc`` places 5.9.0.1 in DE, 62.4.0.1 in FR, 8.8.8.8 in US, 81.2.69.142 in GB
and 200.160.0.8 in BR; documentation space (192.0.2.0/24) is unknown to it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gatekeeper import Gatekeeper, ManualClock, MemoryStore, compile_policy, key_admin
from gatekeeper.decision import ALLOW, FLAG, Decision
from gatekeeper.errors import StoreError
from gatekeeper.geo.stage import COUNTRY_UNKNOWN, IMPOSSIBLE_TRAVEL, TRAVEL_UNCHECKED
from gatekeeper.geo.travel import Sighting
from gatekeeper.store.locations import LocationStore, MemoryLocationStore
from gatekeeper.types import Message, Scope
from tests.conftest import PEPPER, Recorder, asgi_request
from tests.geo import mmdb_fixtures as fx

pytestmark = pytest.mark.anyio

DE, FR, US, GB, BR = "5.9.0.1", "62.4.0.1", "8.8.8.8", "81.2.69.142", "200.160.0.8"
UNKNOWN = "192.0.2.1"
PROXY = "10.0.0.1"

POLICY: dict[str, Any] = {
    "routes": {"protect": ["/v1/*"]},
    "client_address": {"trusted_proxies": ["10.0.0.0/8"]},
    "geo": {"cdn_header": "cf-ipcountry"},
    "tenants": {
        "eu": {"countries": {"allow": ["DE", "FR"], "unknown": "deny"}},
        "nous": {"countries": {"deny": ["US"]}},
        "flagged": {"countries": {"allow": ["DE"], "unknown": "flag"}},
        "open": {},
        "strict_travel": {"travel": {"max_kmh": 900, "action": "deny"}},
        "watched_travel": {"travel": {}},
    },
}


class Rig:
    def __init__(self, policy: dict[str, Any], clock: ManualClock | None = None,
                 locations: LocationStore | None = None) -> None:
        self.app = Recorder()
        self.decisions: list[Decision] = []
        self.clock = clock or ManualClock(time.time())
        self.policy = compile_policy(policy)
        self.store = MemoryStore()
        self.gk = Gatekeeper(self.app, self.policy, store=self.store, pepper=PEPPER,
                             clock=self.clock, locations=locations,
                             observer=lambda scope, d, now: self.decisions.append(d))

    async def key(self, tenant: str, countries: tuple[str, ...] = ()) -> str:
        key, _ = await key_admin.create_key(self.store, PEPPER, self.policy, tenant,
                                            self.clock.now(), countries=countries)
        return key

    async def call(self, key: str, client: str, headers: dict[str, str] | None = None,
                   peer: str | None = None) -> tuple[int, bytes]:
        """Status and body of one request from ``client``: directly, or through the trusted
        proxy (``X-Forwarded-For``) when ``peer`` is the proxy."""
        raw = [(b"authorization", f"Bearer {key}".encode())]
        if peer is not None:
            raw.append((b"x-forwarded-for", client.encode()))
        raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        sent: list[Message] = await asgi_request(self.gk, "/v1/chat/completions", raw,
                                                 method="POST", client=(peer or client, 1))
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], body


def _code(body: bytes) -> str:
    import json

    return str(json.loads(body)["error"]["code"])


# --- the embedded default ------------------------------------------------------------------------

async def test_allow_list_on_the_embedded_default() -> None:
    rig = Rig(POLICY)
    key = await rig.key("eu")
    assert (await rig.call(key, DE))[0] == 200
    assert (await rig.call(key, FR))[0] == 200
    status, body = await rig.call(key, US)
    assert (status, _code(body)) == (403, "country_not_allowed")
    assert b"DE" not in body and b"FR" not in body, "the refusal names what would have worked"
    assert len(rig.app.paths) == 2, "a refused request reached the app"
    assert "country US" in rig.decisions[-1].detail  # the audit line says what was seen


async def test_deny_list_and_unknown_allow() -> None:
    rig = Rig(POLICY)
    key = await rig.key("nous")
    assert (await rig.call(key, US))[0] == 403
    assert (await rig.call(key, DE))[0] == 200
    assert (await rig.call(key, UNKNOWN))[0] == 200  # unknown: allow (the default)


async def test_unknown_deny_and_unknown_flag() -> None:
    rig = Rig(POLICY)
    assert (await rig.call(await rig.key("eu"), UNKNOWN))[0] == 403
    status, _ = await rig.call(await rig.key("flagged"), UNKNOWN)
    assert status == 200
    flagged = rig.decisions[-1]
    assert (flagged.action, flagged.signals) == (FLAG, (COUNTRY_UNKNOWN,))
    await rig.call(await rig.key("flagged"), DE)
    assert (rig.decisions[-1].action, rig.decisions[-1].signals) == (ALLOW, ())


async def test_the_address_comes_through_a_trusted_proxy_only() -> None:
    rig = Rig(POLICY)
    key = await rig.key("eu")
    assert (await rig.call(key, US, peer=PROXY))[0] == 403
    assert (await rig.call(key, DE, peer=PROXY))[0] == 200
    # an untrusted peer's X-Forwarded-For is noise: the peer itself (US) is the client
    status, _ = await rig.call(key, US, headers={"x-forwarded-for": DE})
    assert status == 403


# --- the CDN header -----------------------------------------------------------------------------

async def test_a_trusted_cdn_header_decides_the_country() -> None:
    rig = Rig(POLICY)
    key = await rig.key("eu")
    assert (await rig.call(key, UNKNOWN, {"cf-ipcountry": "DE"}, peer=PROXY))[0] == 200
    assert rig.decisions[-1].action == ALLOW
    # same key, peer and X-Forwarded-For: only the CDN's word differs, and it is not reused
    assert (await rig.call(key, UNKNOWN, {"cf-ipcountry": "US"}, peer=PROXY))[0] == 403
    assert (await rig.call(key, DE, {"cf-ipcountry": "US"}, peer=PROXY))[0] == 403


async def test_a_spoofed_cdn_header_from_an_untrusted_peer_changes_nothing() -> None:
    rig = Rig(POLICY)
    key = await rig.key("eu")
    assert (await rig.call(key, US, {"cf-ipcountry": "DE"}))[0] == 403
    assert (await rig.call(key, DE, {"cf-ipcountry": "US"}))[0] == 200
    assert (await rig.call(key, UNKNOWN, {"cf-ipcountry": "FR"}))[0] == 403


async def test_two_differing_cdn_copies_cancel_and_the_address_decides() -> None:
    rig = Rig(POLICY)
    key = await rig.key("eu")
    raw = [(b"cf-ipcountry", b"DE"), (b"cf-ipcountry", b"US")]
    sent = await asgi_request(rig.gk, "/v1/x", [(b"authorization", f"Bearer {key}".encode()),
                                                 (b"x-forwarded-for", UNKNOWN.encode()), *raw],
                              client=(PROXY, 1))
    assert sent[0]["status"] == 403  # unknown address, unknown: deny
    sent = await asgi_request(rig.gk, "/v1/x", [(b"authorization", f"Bearer {key}".encode()),
                                                 (b"x-forwarded-for", FR.encode()), *raw],
                              client=(PROXY, 1))
    assert sent[0]["status"] == 200


async def test_an_underscore_spelling_of_the_cdn_header_is_never_read() -> None:
    rig = Rig(POLICY)
    key = await rig.key("eu")
    assert (await rig.call(key, UNKNOWN, {"cf_ipcountry": "DE"}, peer=PROXY))[0] == 403


# --- .mmdb files --------------------------------------------------------------------------------

async def test_an_mmdb_file_answers_before_the_embedded_default(tmp_path: Path) -> None:
    city = fx.geolite2_city(tmp_path / "city.mmdb")  # 192.0.2.0/24 DE, 198.51.100.0/24 FR
    policy = POLICY | {"geo": {"files": {"city": str(city)}},
                       "tenants": {"fr": {"countries": {"allow": ["FR"], "unknown": "deny"}}}}
    rig = Rig(policy)
    assert rig.gk.runtime.geo.opened, "a configured file is opened (and checked) at startup"
    key = await rig.key("fr")
    assert (await rig.call(key, "198.51.100.7"))[0] == 200
    assert (await rig.call(key, "192.0.2.10"))[0] == 403
    assert (await rig.call(key, FR))[0] == 200  # not in the file: iptocc answers


async def test_an_unreadable_file_stops_startup_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "city.mmdb"
    bad.write_bytes(b"not a database")
    with pytest.raises(Exception, match=r"geo\.files\.city"):
        Rig(POLICY | {"geo": {"files": {"city": str(bad)}}})


# --- a key narrows its tenant --------------------------------------------------------------------

async def test_a_key_narrows_its_tenant_and_never_widens_it() -> None:
    rig = Rig(POLICY)
    fr_only = await rig.key("eu", ("FR",))
    assert (await rig.call(fr_only, FR))[0] == 200
    assert (await rig.call(fr_only, DE))[0] == 403  # the tenant allows DE; the key does not
    wider = await rig.key("eu", ("US",))
    assert (await rig.call(wider, US))[0] == 403  # the tenant does not allow US


async def test_a_key_with_countries_is_held_to_them_in_a_tenant_without_rules() -> None:
    rig = Rig(POLICY)
    key = await rig.key("open", ("FR",))
    assert (await rig.call(key, FR))[0] == 200
    status, body = await rig.call(key, DE)
    assert (status, _code(body)) == (403, "country_not_allowed")
    assert (await rig.call(key, UNKNOWN))[0] == 403  # a bound key is not known to be in FR


async def test_a_key_bound_later_is_held_to_it_once_the_cache_lets_go() -> None:
    rig = Rig(POLICY)
    key = await rig.key("open")
    assert (await rig.call(key, DE))[0] == 200
    record = (await rig.store.list_keys("open"))[0]
    await key_admin.set_countries(rig.store, record.key_id, ["FR"], rig.clock.now())
    rig.clock.advance(2.0)  # past keys.cache_ttl
    assert (await rig.call(key, DE))[0] == 403


async def test_tenants_and_keys_without_rules_never_open_a_resolver() -> None:
    rig = Rig(POLICY)
    key = await rig.key("open")
    for client in (DE, US, UNKNOWN):
        assert (await rig.call(key, client))[0] == 200
    assert not rig.gk.runtime.geo.opened


# --- impossible travel --------------------------------------------------------------------------

async def test_frankfurt_then_sao_paulo_five_minutes_later_is_refused() -> None:
    rig = Rig(POLICY)
    key = await rig.key("strict_travel")
    assert (await rig.call(key, DE))[0] == 200
    rig.clock.advance(300)
    status, body = await rig.call(key, BR)
    assert (status, _code(body)) == (403, "impossible_travel")
    assert "DE -> BR" in rig.decisions[-1].detail


async def test_new_york_then_london_eight_hours_later_passes() -> None:
    rig = Rig(POLICY)
    key = await rig.key("strict_travel")
    assert (await rig.call(key, US))[0] == 200
    rig.clock.advance(8 * 3600)
    assert (await rig.call(key, GB))[0] == 200


async def test_flag_lets_impossible_travel_through_marked() -> None:
    rig = Rig(POLICY)
    key = await rig.key("watched_travel")
    await rig.call(key, DE)
    rig.clock.advance(60)
    assert (await rig.call(key, BR))[0] == 200
    assert (rig.decisions[-1].action, rig.decisions[-1].signals) == (FLAG, (IMPOSSIBLE_TRAVEL,))


async def test_travel_is_per_key_and_survives_a_reload() -> None:
    locations = MemoryLocationStore()
    rig = Rig(POLICY, locations=locations)
    one, two = await rig.key("strict_travel"), await rig.key("strict_travel")
    assert (await rig.call(one, DE))[0] == 200
    rig.gk.reload(rig.policy)
    rig.clock.advance(120)
    assert (await rig.call(two, BR))[0] == 200  # another key: its own first sighting
    assert (await rig.call(one, BR))[0] == 403  # the reload kept key one's sighting
    assert len(locations) == 2


class _Down(LocationStore):
    async def _seen(self, key: str, sighting: Sighting) -> Sighting | None:
        raise ConnectionError("refused")


async def test_a_location_store_outage_fails_closed_for_deny_and_marks_flag() -> None:
    rig = Rig(POLICY, locations=_Down())
    status, body = await rig.call(await rig.key("strict_travel"), DE)
    assert (status, _code(body)) == (503, "store_unavailable")
    assert (await rig.call(await rig.key("watched_travel"), DE))[0] == 200
    assert rig.decisions[-1].signals == (TRAVEL_UNCHECKED,)
    with pytest.raises(StoreError):
        await _Down().seen("k", Sighting("DE", 0.0, 0.0, 0.0))


async def test_the_scope_carries_the_flagged_decision_to_the_app() -> None:
    seen: list[Decision] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope["gatekeeper"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    policy = compile_policy(POLICY)
    store = MemoryStore()
    gk = Gatekeeper(app, policy, store=store, pepper=PEPPER)
    key, _ = await key_admin.create_key(store, PEPPER, policy, "flagged", time.time())
    await asgi_request(gk, "/v1/x", [(b"authorization", f"Bearer {key}".encode())],
                       client=(UNKNOWN, 1))
    assert seen[0].signals == (COUNTRY_UNKNOWN,)


async def test_travel_on_city_coordinates_from_a_file(tmp_path: Path) -> None:
    cities = fx.write(tmp_path / "city.mmdb", {
        "192.0.2.0/26": fx.city(40.7128, -74.0060, "US"),     # New York
        "192.0.2.64/26": fx.city(51.5074, -0.1278, "GB"),     # London
        "198.51.100.0/24": fx.city(-23.5505, -46.6333, "BR"),  # Sao Paulo
        "203.0.113.0/25": fx.city(*fx.FRANKFURT, "DE"),
        "203.0.113.128/25": fx.city(50.1213, 8.7390, "DE"),   # Frankfurt, another district
    }, "GeoLite2-City")
    rig = Rig(POLICY | {"geo": {"files": {"city": str(cities)}}})
    key = await rig.key("strict_travel")
    assert (await rig.call(key, "192.0.2.10"))[0] == 200
    rig.clock.advance(8 * 3600)
    assert (await rig.call(key, "192.0.2.70"))[0] == 200  # New York, then London 8 h later
    rig.clock.advance(3 * 3600)
    assert (await rig.call(key, "203.0.113.10"))[0] == 200  # London, then Frankfurt 3 h later
    rig.clock.advance(1)
    assert (await rig.call(key, "203.0.113.200"))[0] == 200  # the same city, a second later
    rig.clock.advance(300)
    status, body = await rig.call(key, "198.51.100.7")  # Sao Paulo five minutes later
    assert (status, _code(body)) == (403, "impossible_travel")

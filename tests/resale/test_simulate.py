"""Synthetic traffic: deterministic, on documentation addresses only, and scored to the
issue's targets on the default scenarios."""

from __future__ import annotations

import asyncio

from gatekeeper.networks import NetworkSet, parse_ip
from gatekeeper.resale.scenarios import ABUSE, LEGIT, generate
from gatekeeper.resale.simulate import run, table, verdict

DOCUMENTATION = NetworkSet.parse(["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                  "2001:db8::/32"])


def test_traffic_is_deterministic_labelled_and_on_documentation_addresses() -> None:
    first, world = generate(7, 1)
    again, _ = generate(7, 1)
    assert [t.requests for t in first] == [t.requests for t in again]
    assert generate(8, 1)[0][0].requests != first[0].requests
    for t in first:
        labels = {label for _, label in t.requests}
        assert labels == ({LEGIT, ABUSE} if t.abusive else {LEGIT}), t.scenario
        for record, _ in t.requests:
            assert parse_ip(record["client_ip"]) in DOCUMENTATION, record["client_ip"]
    assert all(64496 <= asn <= 65534 or 4_200_000_000 <= asn < 4_294_967_295
               for _, asn in world.places.values())


def test_default_scenarios_meet_the_targets() -> None:
    outcomes, requests = asyncio.run(run(1, 3))
    assert requests > 50_000
    lines = verdict(outcomes)
    assert all(line.startswith("met:") for line in lines), "\n".join(table(outcomes) + lines)
    by_name = {o.scenario: o for o in outcomes}
    assert {o.scenario for o in outcomes if o.abusive} == {
        "fan-out-resale", "reverse-proxy", "key-checker", "stolen-new-country",
        "impossible-travel"}
    for o in outcomes:
        if not o.abusive:
            assert o.legit_refused == 0 and o.false_positive_rate <= 0.01, o
    fan_out = by_name["fan-out-resale"]
    assert fan_out.abuse - fan_out.abuse_flagged <= fan_out.keys  # at most each first request

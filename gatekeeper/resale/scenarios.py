"""Labelled synthetic traffic: legitimate shapes that must not look like resale, and the abuse
shapes the score exists for. Pure: a seed gives the same traffic every time.

Addresses are documentation ranges only (RFC 5737 for IPv4, RFC 3849's 2001:db8::/32 for
IPv6, one /48 per synthetic network) and ASNs are for documentation (64496-64511, RFC 5398)
or private use (64512-65534 and from 4200000000, RFC 6996): none of it is anyone's real
network. Where an address is comes from the ``World`` the scenarios
build (country and ASN per network), not from a geo file.

Every key has two days of traffic: the first is its owner's history (the score learns), the
second carries the abuse, if any, next to the owner's own requests. Each request is labelled
``legit`` or ``abuse`` and with its scenario.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.geo.location import Location

DAY = 86_400.0
START = 1_800_000_000.0 - 1_800_000_000.0 % DAY
"""Midnight UTC, 15 January 2027."""
LEGIT, ABUSE = "legit", "abuse"
SDK = "OpenAI/Python 1.54.3"
CHAT = "/v1/chat/completions"
PRIVATE_ASN = 4_200_000_000


@dataclass
class World:
    """Synthetic geography: network (an address's /24 or /48) -> country and ASN."""

    places: dict[str, tuple[str, int]] = field(default_factory=dict)
    _next: int = 0

    def network(self, country: str, asn: int) -> str:
        """A new /48 of 2001:db8::/32 in ``country`` on ``asn``; returns its prefix text."""
        self._next += 1
        prefix = f"2001:db8:{self._next:x}::"
        self.places[f"{prefix}/48"] = (country, asn)
        return prefix

    def v4(self, block: str, country: str, asn: int) -> str:
        """Place a documentation /24 (``192.0.2``, ``198.51.100`` or ``203.0.113``)."""
        self.places[f"{block}.0/24"] = (country, asn)
        return block

    def locate(self, group: str) -> Location:
        found = self.places.get(group)
        if found is None:
            return Location(None, network=group)
        country, asn = found
        return Location(country, asn, f"Synthetic AS{asn}", source="simulated",
                        network=f"AS{asn}")


@dataclass
class Traffic:
    """One key's requests, each ``(record, label)``; ``key`` is filled in by the caller."""

    scenario: str
    tenant: str
    abusive: bool
    requests: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    abuse_starts: float | None = None

    def add(self, ts: float, ip: str, label: str = LEGIT, *, agent: str = SDK,
            method: str = "POST", path: str = CHAT, model: str | None = "gpt-4o-mini",
            user: str | None = None, max_tokens: int | None = 256, duration: float = 2.0,
            empty: bool = False, header: str = "authorization") -> None:
        body: dict[str, Any] | None = None
        if method == "POST":
            body = {"model": model} if model else {}
            if not empty:
                body["messages"] = [{"role": "user", "content": "hello"}]
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            if user is not None:
                body["user"] = user
        record = {"ts": round(ts, 3), "client_ip": ip, "method": method, "path": path,
                  "headers": {header: "", "user-agent": agent}, "body": body,
                  "duration_ms": round(duration * 1000), "scenario": self.scenario,
                  "label": label}
        self.requests.append((record, label))
        if label == ABUSE and (self.abuse_starts is None or ts < self.abuse_starts):
            self.abuse_starts = ts


def arrivals(rng: random.Random, start: float, end: float, per_hour: float,
             hours: tuple[int, int] = (0, 24)) -> Iterator[float]:
    """Poisson arrivals at ``per_hour`` between ``start`` and ``end``, only inside the UTC
    hours ``[hours[0], hours[1])`` of each day."""
    t = start
    while True:
        t += rng.expovariate(per_hour / 3600)
        if t >= end:
            return
        if hours[0] <= (t % DAY) // 3600 < hours[1]:
            yield t


def _host(prefix: str, rng: random.Random) -> str:
    return f"{prefix}{rng.randrange(1, 0xFFFF):x}" if prefix.endswith("::") else \
        f"{prefix}.{rng.randrange(1, 255)}"


# --- legitimate shapes ---------------------------------------------------------------------

def office(rng: random.Random, world: World, n: int) -> Traffic:
    """25 people behind one NAT address, three SDK versions, office hours."""
    t = Traffic("office-nat", "office", False)
    nat = f"{world.v4('192.0.2', 'DE', 64496)}.{10 + n}"
    agents = [SDK, "OpenAI/Python 1.52.0", "langchain/0.3 OpenAI/Python 1.54.3"]
    for ts in arrivals(rng, START, START + 2 * DAY, 75, (7, 18)):
        t.add(ts, nat, agent=rng.choice(agents), duration=rng.uniform(1, 8))
    return t


def saas(rng: random.Random, world: World, n: int) -> Traffic:
    """A SaaS backend in three cloud regions (one cloud ASN), around the clock, passing its
    own end users' ids."""
    t = Traffic("saas-3-regions", "saas", False)
    regions = [world.network(c, 64501) for c in ("US", "DE", "JP")]
    hosts = [_host(p, rng) for p in regions for _ in range(4)]
    for ts in arrivals(rng, START, START + 2 * DAY, 90):
        t.add(ts, rng.choice(hosts), agent="OpenAI/Node 4.67.0",
              user=f"u{rng.randrange(400)}", duration=rng.uniform(1, 6))
    return t


def ci_fleet(rng: random.Random, world: World, n: int) -> Traffic:
    """CI runners on one cloud ASN: every job a fresh address, bursts on each push."""
    t = Traffic("ci-fleet", "ci", False)
    pools = [world.network("US", 64502) for _ in range(8)]
    for push in arrivals(rng, START, START + 2 * DAY, 2.5, (6, 20)):
        for _job in range(rng.randrange(8, 20)):
            ip = _host(rng.choice(pools), rng)
            at = push + rng.uniform(0, 90)
            for k in range(rng.randrange(1, 4)):
                t.add(at + k * 5, ip, agent="OpenAI/Python 1.54.3 (ci)", max_tokens=64,
                      duration=rng.uniform(0.5, 3))
    return t


def traveller(rng: random.Random, world: World, n: int) -> Traffic:
    """A developer at home in the US flies to London (twelve hours) and works from a hotel,
    then a conference network."""
    t = Traffic("travelling-dev", "traveller", False)
    home = _host(world.network("US", 64503), rng)
    hotel = _host(world.network("GB", 64504), rng)
    venue = _host(world.network("GB", 64505), rng)
    for ts in arrivals(rng, START, START + DAY + 3 * 3600, 12, (12, 24)):
        t.add(ts, home, duration=rng.uniform(1, 5))
    landed = START + DAY + 15 * 3600  # in London next morning: 12 hours without use
    for ts in arrivals(rng, landed, landed + 4 * 3600, 12):
        t.add(ts, hotel, duration=rng.uniform(1, 5))
    for ts in arrivals(rng, landed + 5 * 3600, landed + 9 * 3600, 12):
        t.add(ts, venue, duration=rng.uniform(1, 5))
    return t


def mobile(rng: random.Random, world: World, n: int) -> Traffic:
    """A team on phones: two carriers' pools, a new address nearly every request."""
    t = Traffic("mobile-team", "mobile", False)
    carriers = [[world.network("US", asn) for _ in range(6)] for asn in (64506, 64507)]
    agents = ["TeamApp/3.2 iOS/18.1", "TeamApp/3.2 Android/15", "TeamApp/3.1 iOS/17.6"]
    for ts in arrivals(rng, START, START + 2 * DAY, 40, (6, 23)):
        carrier = rng.choice(carriers)
        t.add(ts, _host(rng.choice(carrier), rng), agent=rng.choice(agents),
              duration=rng.uniform(1, 4))
    return t


# --- abuse shapes, each next to its owner's own traffic -------------------------------------

def _owner(t: Traffic, rng: random.Random, world: World, country: str, asn: int,
           per_hour: float = 20) -> str:
    ip = _host(world.network(country, asn), rng)
    for ts in arrivals(rng, START, START + 2 * DAY, per_hour, (8, 18)):
        t.add(ts, ip, duration=rng.uniform(1, 5))
    return ip


def _attack_start(rng: random.Random) -> float:
    return START + DAY + rng.uniform(9, 15) * 3600


BUYER_COUNTRIES = ("US", "BR", "IN", "RU", "CN", "ID", "VN", "TR", "NG", "PK", "MX", "PH")
BUYER_AGENTS = ("SillyTavern/1.12", "python-requests/2.32", "OpenAI/Node 4.67.0",
                "axios/1.7.7", "Go-http-client/2.0", SDK)


def fan_out(rng: random.Random, world: World, n: int) -> Traffic:
    """The key resold to 200 buyers, each on their own network somewhere in the world."""
    t = Traffic("fan-out-resale", "fanout", True)
    _owner(t, rng, world, "FR", 64520 + n)
    begin = _attack_start(rng)
    buyers = [(_host(world.network(rng.choice(BUYER_COUNTRIES), PRIVATE_ASN + 200 * n + i), rng),
               rng.choice(BUYER_AGENTS)) for i in range(200)]
    for ts in arrivals(rng, begin, begin + 3600, 3000):
        ip, agent = rng.choice(buyers)
        t.add(ts, ip, ABUSE, agent=agent, model=rng.choice(["gpt-4o", "gpt-4o-mini"]),
              duration=rng.uniform(2, 20))
    return t


def reverse_proxy(rng: random.Random, world: World, n: int) -> Traffic:
    """A reseller's proxy on one datacenter address: its own minimal headers (the Azure
    ``api-key``), its buyers' ids in ``user``, high volume and concurrency, day and night."""
    t = Traffic("reverse-proxy", "proxy", True)
    _owner(t, rng, world, "DE", 64530 + n)
    proxy = f"{world.v4('203.0.113', 'NL', 64510)}.{50 + n}"
    begin = _attack_start(rng)
    for ts in arrivals(rng, begin, START + 2 * DAY, 600):
        t.add(ts, proxy, ABUSE, agent="python-httpx/0.27.2", header="api-key",
              user=f"buyer{rng.randrange(150)}" if rng.random() < 0.6 else None,
              model="gpt-4o", max_tokens=1024, duration=rng.uniform(5, 40))
    return t


def key_checker(rng: random.Random, world: World, n: int) -> Traffic:
    """A checker validating the stolen key from a VPS: list models, try each with
    ``max_tokens: 1``, send invalid requests expecting 400s; about 30 requests in a minute."""
    t = Traffic("key-checker", "checker", True)
    _owner(t, rng, world, "DE", 64540 + n)
    vps = _host(world.network("US", PRIVATE_ASN + 10_000 + n), rng)
    ts = _attack_start(rng)
    agent = "python-requests/2.31"
    for _ in range(3):
        t.add(ts, vps, ABUSE, agent=agent, method="GET", path="/v1/models", model=None)
        ts += rng.uniform(0.5, 2)
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo", "o1",
                  "o1-mini", "o3-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.5-preview",
                  "chatgpt-4o-latest", "gpt-4o-2024-05-13", "gpt-4-0613"):
        t.add(ts, vps, ABUSE, agent=agent, model=model, max_tokens=rng.choice([0, 1]),
              duration=0.4)
        ts += rng.uniform(0.5, 2)
    for _ in range(5):
        t.add(ts, vps, ABUSE, agent=agent, model="gpt-4o-mini", empty=True, max_tokens=None,
              duration=0.1)
        ts += rng.uniform(0.5, 2)
    for _ in range(8):
        t.add(ts, vps, ABUSE, agent=agent, model="gpt-4o", duration=1.0)
        ts += rng.uniform(0.5, 2)
    return t


def stolen_new_country(rng: random.Random, world: World, n: int) -> Traffic:
    """The key used by a thief from a country its owner never used, with another client,
    while the owner sleeps (no other signal: one address, ordinary requests)."""
    t = Traffic("stolen-new-country", "stolen", True)
    _owner(t, rng, world, "GB", 64550 + n)
    thief = _host(world.network("BR", PRIVATE_ASN + 20_000 + n), rng)
    begin = START + DAY + rng.uniform(20, 22) * 3600
    for ts in arrivals(rng, begin, begin + 3600, 120):
        t.add(ts, thief, ABUSE, agent="OpenAI/Node 4.20.1", model="gpt-4o",
              duration=rng.uniform(2, 15))
    return t


def impossible_travel(rng: random.Random, world: World, n: int) -> Traffic:
    """The key used from Japan minutes after (and while) its owner uses it from Germany,
    with the same SDK: only geography gives it away."""
    t = Traffic("impossible-travel", "travel", True)
    _owner(t, rng, world, "DE", 64560 + n, per_hour=30)
    thief = _host(world.network("JP", PRIVATE_ASN + 30_000 + n), rng)
    begin = _attack_start(rng)
    for ts in arrivals(rng, begin, begin + 1800, 60):
        t.add(ts, thief, ABUSE, duration=rng.uniform(1, 5))
    return t


Shape = Callable[[random.Random, World, int], Traffic]
LEGIT_SHAPES: tuple[Shape, ...] = (office, saas, ci_fleet, traveller, mobile)
ABUSE_SHAPES: tuple[Shape, ...] = (fan_out, reverse_proxy, key_checker, stolen_new_country,
                                   impossible_travel)


def generate(seed: int, keys_per_scenario: int = 3) -> tuple[list[Traffic], World]:
    """Every scenario ``keys_per_scenario`` times, each instance its own key."""
    rng = random.Random(seed)
    world = World()
    traffic = [shape(random.Random(rng.random()), world, n)
               for shape in (*LEGIT_SHAPES, *ABUSE_SHAPES) for n in range(keys_per_scenario)]
    return traffic, world

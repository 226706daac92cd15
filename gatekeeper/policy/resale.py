"""The ``resale`` section: the resale score's windows, signal weights, thresholds, mode and a
tenant's known-legitimate shape, at the top level (defaults) and per tenant (overrides).

    resale:
      mode: shadow                     # off | shadow (score and audit, never act) | enforce
      windows: {short: 600, long: 86400}
      thresholds: {flag: 50, throttle: 80, block: null, suspend: 120}
      signals:                         # points = min(cap, weight * (value - allow)) when above
        networks: {allow: 4, weight: 5, cap: 60}
      known:                           # what this tenant's own traffic looks like
        networks: [203.0.113.0/24, AS64500]   # regions, CI fleets: each entry one network
        countries: [DE, US]            # never "new"
        nat_egress: [192.0.2.10/32]    # many people behind one address: no end-user signal
      throttle_factor: 1.0             # a throttled key passes at its baseline pace times this
      max_keys: 50000                  # top level only: the keys held in memory
      flag_header: false               # top level only: x-gatekeeper-resale on marked answers
    tenants:
      acme:
        resale: {mode: enforce, known: {countries: [DE]}}   # fields override the defaults

Without a top-level section the score is ``off``. A tenant's section starts from the
top-level one: a field it does not name keeps the default's value (a signal it names keeps
the default's other numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final

from gatekeeper.geo.travel import TravelRule
from gatekeeper.networks import NetworkSet, parse_network
from gatekeeper.policy.fields import Fields
from gatekeeper.policy.geo import country_problem

OFF: Final = "off"
SHADOW: Final = "shadow"
ENFORCE: Final = "enforce"
"""``Final``: the compiled request path compares a tenant's mode with a constant, not with a
look-up in a module's dict."""
MODES = (OFF, SHADOW, ENFORCE)
THRESHOLDS = ("flag", "throttle", "block", "suspend")
"""In rising order: a score at or above a threshold takes that action (the highest wins)."""


@dataclass(frozen=True, slots=True)
class SignalRule:
    """How one signal turns into points: nothing up to ``allow``, then ``weight`` points per
    unit above it, at most ``cap``."""

    allow: float
    weight: float
    cap: float

    def points(self, value: float) -> float:
        return 0.0 if value <= self.allow else min(self.cap, (value - self.allow) * self.weight)


SIGNALS: dict[str, SignalRule] = {
    # fan-out: distinct values in the short window
    "addresses": SignalRule(8, 2, 20),
    "networks": SignalRule(4, 5, 60),
    "countries": SignalRule(2, 15, 45),
    "user_agents": SignalRule(4, 5, 30),
    # reverse proxy: end users per address, volume and concurrency over the key's baseline
    "end_users": SignalRule(20, 0.5, 20),
    "volume": SignalRule(5, 4, 40),
    "concurrency": SignalRule(4, 5, 30),
    "duty_cycle": SignalRule(20, 5, 20),
    # takeover: first use from a network, country or user agent, a dormant key waking up
    "new_networks": SignalRule(0, 15, 30),
    "new_countries": SignalRule(0, 25, 50),
    "new_user_agents": SignalRule(0, 15, 15),
    "dormant_wake": SignalRule(5, 3, 45),
    # reconnaissance (key checkers)
    "model_listings": SignalRule(2, 10, 30),
    "models": SignalRule(3, 10, 40),
    "tiny_probes": SignalRule(1, 15, 45),
    "invalid": SignalRule(2, 10, 40),
    # geo
    "impossible_travel": SignalRule(0, 60, 60),
}
"""Every signal the score knows, with its default rule. Values are explained in
``resale/score.py``."""


@dataclass(frozen=True, slots=True)
class KnownShape:
    """A tenant's legitimate shape: what must not look like resale."""

    networks: tuple[tuple[str, NetworkSet], ...] = ()
    """(group name, CIDRs) per declared entry: every address inside counts as that one
    network (a CI fleet's thousand runners are one network) and is never new."""
    asns: frozenset[int] = frozenset()
    countries: frozenset[str] = frozenset()
    nat_egress: NetworkSet = field(default_factory=NetworkSet)


@dataclass(frozen=True, slots=True)
class ResaleSettings:
    mode: str = OFF
    short_window: float = 600.0
    long_window: float = 86_400.0
    thresholds: tuple[float | None, ...] = (50.0, 80.0, None, 120.0)
    """flag, throttle, block, suspend; None: that action is never taken."""
    signals: MappingProxyType[str, SignalRule] = field(
        default_factory=lambda: MappingProxyType(dict(SIGNALS)), hash=False)
    """Left out of the hash (a mapping has none), so settings and the tenant holding them
    stay hashable like every other piece of the compiled policy."""
    known: KnownShape = field(default_factory=KnownShape)
    learn_requests: int = 20
    learn_seconds: float = 3600.0
    """A key is new until it has made this many requests over this long: before that it has
    no baseline, and nothing it does is "new" (everything is)."""
    dormant_after: float = 7 * 86_400.0
    travel: TravelRule = field(default_factory=TravelRule)
    max_keys: int = 50_000
    """Keys whose state is held in memory; the least recently used is forgotten first."""
    throttle_factor: float = 1.0
    """A throttled key passes at its baseline pace times this."""
    flag_header: bool = False
    """Top level only: an allowed request the score marked carries ``x-gatekeeper-resale``
    (its action) to the app and the client."""

    @property
    def acts(self) -> bool:
        return self.mode == ENFORCE


RESALE_OFF = ResaleSettings()


def load_resale(fields: Fields, base: ResaleSettings | None = None,
                top: bool = True) -> ResaleSettings:
    """The section at ``fields`` over ``base`` (the defaults, or the top-level section for a
    tenant). ``top`` allows ``max_keys``; a present section defaults to ``shadow``."""
    base = base or ResaleSettings(mode=SHADOW)
    mode = fields.choice("mode", MODES, base.mode)
    windows = fields.section("windows")
    short = windows.number("short", base.short_window, minimum=10.0, maximum=86_400.0)
    long = windows.number("long", base.long_window, minimum=60.0, maximum=30 * 86_400.0)
    if short >= long:
        windows.error("short", short, "must be shorter than windows.long")
    windows.finish()
    thresholds = _thresholds(fields.section("thresholds"), base.thresholds)
    signals = _signals(fields.section("signals"), base.signals)
    known = _known(fields.section("known"), base.known) if fields.has("known") else base.known
    learn = fields.section("learn")
    learn_requests = learn.whole("requests", 0, 1_000_000)
    learn_seconds = learn.number("seconds", base.learn_seconds, maximum=30 * 86_400.0)
    learn.finish()
    dormant = fields.number("dormant_after", base.dormant_after, minimum=60.0)
    travel_fields = fields.section("travel")
    travel = TravelRule(
        travel_fields.number("max_kmh", base.travel.max_kmh, minimum=1.0, maximum=1e6),
        min_km=travel_fields.number("min_km", base.travel.min_km, maximum=20_000.0))
    travel_fields.finish()
    throttle_factor = fields.number("throttle_factor", base.throttle_factor, minimum=0.01,
                                    maximum=100.0)
    max_keys, flag_header = base.max_keys, base.flag_header
    if top:
        found = fields.whole("max_keys", 1, 100_000_000)
        max_keys = base.max_keys if found is None else found
        flag_header = fields.get("flag_header", bool, base.flag_header, "true or false")
    fields.finish()
    return replace(base, mode=mode, short_window=short, long_window=long,
                   thresholds=thresholds, signals=signals, known=known,
                   learn_requests=base.learn_requests if learn_requests is None
                   else learn_requests,
                   learn_seconds=learn_seconds, dormant_after=dormant, travel=travel,
                   max_keys=max_keys, throttle_factor=throttle_factor,
                   flag_header=flag_header)


def _thresholds(fields: Fields, base: tuple[float | None, ...]) -> tuple[float | None, ...]:
    found: list[float | None] = []
    for name, default in zip(THRESHOLDS, base, strict=True):
        if not fields.has(name) or fields.get(name, (int, float, type(None)), None) is None:
            found.append(default if not fields.has(name) else None)  # null: never this action
            continue
        found.append(fields.number(name, default or 0.0, minimum=0.0))
    fields.finish()
    previous: tuple[str, float] | None = None
    for name, level in zip(THRESHOLDS, found, strict=True):
        if level is None:
            continue
        if previous is not None and level <= previous[1]:
            fields.error(name, level, f"must be above {previous[0]} ({previous[1]:g})")
        previous = (name, level)
    return tuple(found)


def _signals(fields: Fields, base: MappingProxyType[str, SignalRule]
             ) -> MappingProxyType[str, SignalRule]:
    rules = dict(base)
    for name, raw in fields.items():
        entry = Fields(raw, fields.field(name), fields.errors)
        if name not in SIGNALS:
            fields.error(name, "(value)", f"is not a signal (known: {', '.join(SIGNALS)})")
            continue
        old = rules[name]
        rules[name] = SignalRule(entry.number("allow", old.allow),
                                 entry.number("weight", old.weight, maximum=1000.0),
                                 entry.number("cap", old.cap, maximum=10_000.0))
        entry.finish()
    return MappingProxyType(rules)


def _known(fields: Fields, base: KnownShape) -> KnownShape:
    groups: list[tuple[str, NetworkSet]] = []
    asns: set[int] = set()
    for i, item in enumerate(fields.get("networks", list, [], "a list of CIDRs or ASNs")):
        text = item.strip() if isinstance(item, str) else item
        if isinstance(text, str) and text[:2].upper() == "AS" and text[2:].isdigit():
            asns.add(int(text[2:]))
            continue
        try:
            groups.append((f"known:{text}", NetworkSet([parse_network(str(text))])))
        except (ValueError, TypeError):
            fields.error(f"networks[{i}]", item, "is neither a network nor an ASN (AS64500)")
    countries: set[str] = set()
    for i, item in enumerate(fields.get("countries", (list, str), [], "a list of codes")):
        problem = country_problem(item)
        if problem is None:
            countries.add(str(item).strip().upper())
        else:
            fields.error(f"countries[{i}]", item, problem)
    nat = fields.str_list("nat_egress", parse_network, "is not a network")
    fields.finish()
    return KnownShape(tuple(groups), frozenset(asns), frozenset(countries), NetworkSet(nat))


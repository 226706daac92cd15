"""Per-key signal state over sliding windows, updated in O(1) per request, bounded in memory.

Memory bound: at most ``max_keys`` keys (``resale.max_keys``, default 50,000), the least
recently used forgotten first (``OrderedDict.popitem(last=False)``, O(1) however long it
churns). Per key: six bounded maps of distinct values (addresses, networks, countries, user
agents, end users, models; ``DISTINCT_CAP`` each, least recently seen dropped first), a ring
of ``RING`` request counts, a duty-cycle bitmask, the end times of requests in flight
(``IN_FLIGHT_CAP``) and small capped lists of event times (``EVENT_CAP``, made on first use).
Measured with ``tracemalloc`` (CPython 3.11): about 1.7 KB for a key used from one place,
about 30 KB at most for a key at every cap; 50,000 keys hold about 85 MB in the common case.
On a store that shares signals, a key also holds the fleet's view (``shared.Shared``, about
250 bytes).
A forgotten key starts again as new: it has no baseline and learns for
``resale.learn`` before anything it does can count as "new" again.

Distinct counts saturate at the cap, which is far above every default ``allow``: the score
only needs to know that a key is far out, not how far. (The fleet's counts, ``shared.py``, do
not saturate.)
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import TYPE_CHECKING, Final, TypeVar

from gatekeeper.decision import ALLOW
from gatekeeper.geo.travel import Sighting, impossible
from gatekeeper.policy.resale import ResaleSettings
from gatekeeper.resale.event import Event

if TYPE_CHECKING:
    from gatekeeper.resale.score import Score
    from gatekeeper.resale.shared import Shared

ADDRESS, NETWORK, COUNTRY, AGENT, END_USER, MODEL = range(6)
DIMENSIONS = ("addresses", "networks", "countries", "user_agents", "end_users", "models")
NEW_SIGNALS = {NETWORK: "new_networks", COUNTRY: "new_countries", AGENT: "new_user_agents"}
DISTINCT_CAP: Final = 24
EVENT_CAP: Final = 16
RING: Final = 10
"""The short window is counted in this many slots: a count is exact to a tenth of it."""
IN_FLIGHT_CAP: Final = 256
LEARN_WEIGHT, BASELINE_WEIGHT = 0.2, 0.05
"""How much one finished short window moves the baseline (an exponential average): quickly
while the key learns, slowly after, and by at most ``BASELINE_STEP`` times the baseline, so
a resold key's flood takes hours to become its normal, not minutes."""
BASELINE_STEP: Final = 2.0
_DAY_MASK: Final = (1 << 24) - 1


class KeyState:
    """Everything the score knows about one key. ``observe`` is the only writer."""

    __slots__ = ("announced", "baseline", "bucket_count", "bucket_peak", "bucket_start",
                 "cached", "cached_until", "first_seen", "hour_at", "hours", "in_flight",
                 "invalid", "last_place", "last_seen", "last_values", "listings", "news",
                 "peak_baseline", "requests", "ring", "ring_at", "scored", "scored_at", "seen",
                 "settings", "shared", "throttle_at", "tiny", "travel", "unscored", "woke_at",
                 "woke_count", "would")

    def __init__(self, ts: float) -> None:
        self.first_seen = self.last_seen = ts
        self.requests = 0
        self.seen: tuple[dict[str, float], ...] = ({}, {}, {}, {}, {}, {})
        self.news: list[tuple[int, str, float]] | None = None
        """(dimension, value, when) of first uses after learning; lists stay None until
        their first event (most keys never have one), then hold the last ``EVENT_CAP``."""
        self.listings: list[float] | None = None
        self.tiny: list[float] | None = None
        self.invalid: list[float] | None = None
        self.travel: list[float] | None = None
        self.ring = [0] * RING
        self.ring_at = 0
        self.bucket_start = ts
        self.bucket_count = 0
        self.bucket_peak = 0
        self.baseline: float | None = None
        self.peak_baseline: float | None = None
        self.in_flight: list[float] = []
        self.hours = 0
        self.hour_at = int(ts // 3600)
        self.woke_at: float | None = None
        self.woke_count = 0
        self.last_place: Sighting | None = None
        self.last_values: tuple[str | None, ...] = ()
        """The previous event's distinct values: a repeat is counted without a lookup."""
        self.cached: Score | None = None
        """The last score computed (``Scorer``); None once something it counts has changed."""
        self.scored: Score | None = None
        """The last score computed, kept when ``cached`` is dropped (snapshots read it)."""
        self.would = ALLOW
        self.cached_until = self.scored_at = 0.0
        self.unscored = 0
        """Requests counted since ``cached`` was computed."""
        self.announced = ALLOW
        """The action last written to the audit log for this key (the live path's)."""
        self.throttle_at = 0.0
        """When a throttled key's next request is due (GCRA)."""
        self.settings: ResaleSettings | None = None
        """The settings its last new values were counted under (windows: ``shared.py``)."""
        self.shared: Shared | None = None
        """What the other replicas saw (``shared.py``); None on a store that shares nothing."""

    def learned(self, settings: ResaleSettings, ts: float) -> bool:
        """Whether the key has history enough for a baseline and for "new" to mean new."""
        return self.requests >= settings.learn_requests and \
            ts - self.first_seen >= settings.learn_seconds


def observe(state: KeyState, event: Event, settings: ResaleSettings) -> KeyState:
    """Count one request into its key's state (in place; returned for chaining). Whatever
    changes a distinct count, an event list, the baseline or the duty cycle drops the cached
    score; a plain repeat (same address, network, country, agent, user and model as the
    previous request) only moves timestamps and counters."""
    ts = event.ts
    short = settings.short_window
    if state.requests and ts - state.last_seen >= settings.dormant_after:
        state.woke_at, state.woke_count = ts, 0
    if state.woke_at is not None and ts - state.woke_at <= short:
        state.woke_count += 1
        state.cached = None
    place, last = event.place, state.last_place
    # travel only counts towards a new country, judged before this request joins the maps;
    # the same point again cannot be travel
    fresh = place is not None and last is not None and last[:3] != place[:3] and \
        state.learned(settings, ts) and _fresh_country(state, event, settings)

    values = (event.address, event.network, event.country, event.user_agent,
              None if event.shared else event.end_user, event.model)
    if values != state.last_values:  # a repeat moves nothing: its values are last_seen's
        settle(state)
        state.last_values = values
        state.settings = settings
        learned = state.learned(settings, ts)  # here and in _count only: a repeat needs none
        for dim, value in enumerate(values):
            if value is None:
                continue
            seen = state.seen[dim]
            if value in seen:
                del seen[value]  # re-inserted at the end: the map is kept in order of last use
            else:
                state.cached = None
                if learned and dim in NEW_SIGNALS and not _known(event, dim, settings):
                    state.news = _push(state.news, (dim, value, ts))
                if len(seen) >= DISTINCT_CAP:
                    del seen[next(iter(seen))]  # small maps: the dead-slot scan stays short
            seen[value] = ts

    if event.listing or event.tiny or event.invalid:
        state.cached = None
        if event.listing:
            state.listings = _push(state.listings, ts)
        if event.tiny:
            state.tiny = _push(state.tiny, ts)
        if event.invalid:
            state.invalid = _push(state.invalid, ts)
    if place is not None:
        if fresh and impossible(last, place, settings.travel) is not None:
            state.travel = _push(state.travel, ts)
            state.cached = None
        state.last_place = place

    _count(state, ts, settings)
    in_flight = state.in_flight
    if in_flight:
        while in_flight and in_flight[0] <= ts:
            heapq.heappop(in_flight)
    if event.duration > 0 and len(in_flight) < IN_FLIGHT_CAP:
        heapq.heappush(in_flight, ts + event.duration)
    if len(in_flight) > state.bucket_peak:
        state.bucket_peak = len(in_flight)

    hour = int(ts // 3600)
    if hour > state.hour_at:
        shift = hour - state.hour_at
        state.hours = ((state.hours << shift) & _DAY_MASK) if shift < 24 else 0
        state.hour_at = hour
        state.cached = None
    state.hours |= 1
    state.requests += 1
    state.unscored += 1
    if state.requests == settings.learn_requests:
        state.cached = None
    if ts > state.last_seen:
        state.last_seen = ts
    return state


def settle(state: KeyState) -> None:
    """Write the time of the last use into the previous event's values: a repeat of the same
    values leaves them last in their maps with an older time, read as ``last_seen``."""
    at = state.last_seen
    for seen, value in zip(state.seen, state.last_values, strict=False):  # () at first
        if value is not None:
            seen[value] = at


def _fresh_country(state: KeyState, event: Event, settings: ResaleSettings) -> bool:
    """Whether the event's country is new to the key (first used in the long window, not
    declared). Travel only counts towards such a place: a SaaS backend hopping between its
    three regions all day is fast, not impossible."""
    country = event.country
    if country is None or country in settings.known.countries:
        return False
    if country not in state.seen[COUNTRY]:
        return True
    since = event.ts - settings.long_window
    return any(dim == COUNTRY and value == country and at >= since
               for dim, value, at in state.news or ())


T = TypeVar("T")


def _push(items: list[T] | None, item: T) -> list[T]:
    if items is None:
        return [item]
    items.append(item)
    if len(items) > EVENT_CAP:
        del items[0]  # a list of EVENT_CAP items: shifting it costs less than a deque's block
    return items


def _known(event: Event, dim: int, settings: ResaleSettings) -> bool:
    if dim == NETWORK:
        return event.known_network
    if dim == COUNTRY:
        return event.country in settings.known.countries
    return False


def _count(state: KeyState, ts: float, settings: ResaleSettings) -> None:
    """The request into the ring of short-window slots and the baseline's current bucket."""
    short = settings.short_window
    if ts - state.bucket_start >= short:
        if state.bucket_count:
            learned = state.learned(settings, ts)
            state.baseline = fold(state.baseline, state.bucket_count, learned)
            state.peak_baseline = fold(state.peak_baseline, state.bucket_peak, learned)
            state.cached = None
        state.bucket_start, state.bucket_count, state.bucket_peak = ts, 0, 0
    state.bucket_count += 1
    slot = int(ts // (short / RING))
    if slot > state.ring_at:
        ring = state.ring
        last = state.ring_at + RING
        for i in range(state.ring_at + 1, (slot if slot < last else last) + 1):
            ring[i % RING] = 0
        state.ring_at = slot
    state.ring[slot % RING] += 1  # slot <= ring_at now: the latest slot seen, or an older one


def fold(baseline: float | None, value: int, learned: bool) -> float:
    if baseline is None:
        return float(value)
    if not learned:
        return baseline + LEARN_WEIGHT * (value - baseline)
    return baseline + BASELINE_WEIGHT * (min(value, BASELINE_STEP * max(baseline, 1.0)) - baseline)


def recent_requests(state: KeyState, now: float, short: float) -> int:
    """Requests in the short window ending at ``now`` (to a tenth of the window)."""
    lag = int(now // (short / RING)) - state.ring_at
    if lag <= 0:
        return sum(state.ring)
    if lag >= RING:
        return 0
    ring, at = state.ring, state.ring_at
    return sum(ring[(at - i) % RING] for i in range(RING - max(lag, 0)))


def active_hours(state: KeyState, now: float) -> int:
    """Hours of the last 24 in which the key was used."""
    shift = int(now // 3600) - state.hour_at
    return 0 if shift >= 24 else ((state.hours << max(shift, 0)) & _DAY_MASK).bit_count()


class ResaleTracker:
    """Every key's state, at most ``max_keys`` of them (least recently used forgotten)."""

    __slots__ = ("keys", "max_keys")

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.keys: OrderedDict[str, KeyState] = OrderedDict()

    def observe(self, event: Event, settings: ResaleSettings) -> KeyState:
        keys = self.keys
        state = keys.get(event.key_id)
        if state is None:
            if len(keys) >= self.max_keys:
                keys.popitem(last=False)
            state = keys[event.key_id] = KeyState(event.ts)
        else:
            keys.move_to_end(event.key_id)
        return observe(state, event, settings)

    def get(self, key_id: str) -> KeyState | None:
        return self.keys.get(key_id)

    def __len__(self) -> int:
        return len(self.keys)

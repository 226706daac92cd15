"""Signals shared across replicas: what every process saw of a key, pooled in the store in
batches off the request path, so a key used from many places split over the fleet scores as
if one process had seen it all.

Each process counts its requests in memory as before (``state.observe``, nothing more on the
request path). Once a second (``ResaleMemory.share``), for every key it saw since the last
batch, it sends the key's new values per dimension and its new requests to the store, and
reads back the fleet's counts over the key's short window, in one round trip
(``store/signals.py``). The score then takes, per fan-out dimension, the larger of its own
count and the fleet's, and for volume the larger of its own ratio to its own baseline and the
fleet's to the fleet's (``fleet_baseline``, learnt from these reads: under an even load
balancer both ratios agree; a thief served by another replica than the owner moves the
fleet's). So the fleet's view reaches the score within about a second across replicas (one
batch), on the key's next request here, and is used for a tenth of the short window after
it was read: a key this process stops seeing falls back to its own counts.

The fleet's counts are HyperLogLog estimates and are not capped at ``DISTINCT_CAP``. On the
memory store (one process) nothing is shared and no task does store I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from gatekeeper.resale.state import RING, KeyState, ResaleTracker, fold, settle
from gatekeeper.store.signals import Counts, KeySignals

MAX_BATCH = 5_000
"""Keys sent in one batch, the most recently used first; the rest are shared the next time
they are used."""


class Shared:
    """A key's fleet-wide view, as last read from the store."""

    __slots__ = ("at", "counts", "fleet_baseline", "folded_at", "synced")

    def __init__(self) -> None:
        self.counts: Counts = ()
        """Distinct values per dimension, then requests in the short window."""
        self.at = float("-inf")
        """When ``counts`` was read."""
        self.synced = 0
        """The key's request count (``KeyState.requests``) already sent."""
        self.fleet_baseline: float | None = None
        """The fleet's requests per short window, averaged like ``KeyState.baseline``."""
        self.folded_at = float("-inf")


LATE = 5.0
"""Seconds a request may take between its time and being counted (a slow body) and still have
its values in the next batch; a later one's wait for their next use."""


def collect(tracker: ResaleTracker, since: float,
            limit: int = MAX_BATCH) -> list[tuple[KeyState, KeySignals]]:
    """Every key used since the last batch (collected at ``since``), with the values it used
    since then and its requests not yet sent."""
    found: list[tuple[KeyState, KeySignals]] = []
    since -= LATE
    for key_id, state in _unsent(tracker):
        if len(found) >= limit:
            break
        settings = state.settings
        if settings is None:
            continue
        shared = state.shared
        if shared is None:
            shared = state.shared = Shared()
        settle(state)
        members = tuple(_since(seen, since) for seen in state.seen)
        requests = state.requests - shared.synced
        shared.synced = state.requests
        found.append((state, KeySignals(
            key_id, settings.short_window / RING, RING, members, requests,
            tuple(bool(seen) for seen in state.seen))))
    return found


def absorb(state: KeyState, counts: Counts, now: float) -> None:
    """The fleet's counts read back for ``state``: its cached score is dropped when they
    changed, and the fleet's baseline learns once per short window."""
    shared, settings = state.shared, state.settings
    if shared is None or settings is None:
        return
    if counts != shared.counts:
        state.cached = None
    shared.counts, shared.at = counts, now
    if now - shared.folded_at >= settings.short_window and counts[-1]:
        shared.fleet_baseline = fold(shared.fleet_baseline, counts[-1],
                                      state.learned(settings, now))
        shared.folded_at = now


def fleet(state: KeyState, now: float, short: float) -> Counts | None:
    """The fleet's counts when read within a tenth of the short window, else None."""
    shared = state.shared
    if shared is None or now - shared.at > short / RING or not shared.counts:
        return None
    return shared.counts


def _unsent(tracker: ResaleTracker) -> Iterator[tuple[str, KeyState]]:
    """The keys with requests not yet sent: the tail of the tracker's least-recently-used
    order, walked back to the first key whose requests were all sent (every key before it
    was used before it, so none of them has any either). Not by time: a request's time is
    when it started, and a slow one is counted after quicker, later ones."""
    keys = tracker.keys
    for key_id in reversed(keys):
        state = keys[key_id]
        if state.shared is not None and state.shared.synced == state.requests:
            return
        yield key_id, state


def _since(seen: dict[str, float], since: float) -> tuple[str, ...]:
    """The values last used at or after ``since``: a suffix of the map (in order of use)."""
    found = []
    for value, at in reversed(seen.items()):
        if at < since:
            break
        found.append(value)
    return tuple(found)

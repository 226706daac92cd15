"""The resale score on the live request path: one call per request of a known key, after the
request is decided (limits included), before it is answered.

    decision = rt.resale.run(decision, facts, scan, key, scope, below, now, charge)

It judges the request from the key's state *before* it (one request of lag: the state this
process already holds, no store round trip), then counts the request into that state, allowed
or refused (a key checker's 400s and wrong-network 403s count too), all in memory: the state
is this process's (``ResaleTracker``, bounded by ``resale.max_keys``), so refusals need no
batching. Requests that name no known key (forged, unknown) never get here.

What the score does under ``mode: enforce`` (``Scorer.judge`` and ``act``): ``flag`` passes
the request (and adds ``x-gatekeeper-resale: flag`` when ``resale.flag_header``), ``throttle``
passes it at the key's own baseline pace and refuses the rest with ``resale_throttled``,
``block`` refuses it with ``resale_suspected``, ``suspend`` refuses it with ``key_suspended``
and stores the key's status ``suspended`` off the hot path, so every replica refuses it until
``gatekeeper keys reinstate``. Every change of what the score asks for is one ``resale``
audit line and counted in ``gatekeeper_resale_actions_total``, in ``shadow`` as in
``enforce``: shadow computes and logs everything and changes no answer.

The body's signals (``model``, the ``user`` id, ``max_tokens`` of 0 or 1) are seen live only
when the body was read anyway, before this stage: a limit reserving tokens or spend, or a
request rule, reads it (``admit_request`` leaves its ``BodyFacts`` in the scope under
``BODY_FACTS``, taken out here). A request whose body is not read gives no body signal, and a
body estimated without parsing (a token limit alone, a body under 4 KB) gives ``max_tokens``
but no ``user`` or model. Not seen live (yet): the upstream's duration (concurrency). Replay
reads both from its records.

With several replicas on a store that pools signals (Redis), the fan-out and volume signals
count the whole fleet's requests within about a second (``shared.py``), with nothing more on
the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from gatekeeper.audit import AuditLog
from gatekeeper.charge import AnyCharge
from gatekeeper.decision import ALLOW, SUSPEND, Decision, carrying
from gatekeeper.facts import FactReader, RequestFacts, Scan
from gatekeeper.geo.location import UNKNOWN, Location
from gatekeeper.geo.travel import Sighting, sighting
from gatekeeper.networks import IPAddr
from gatekeeper.policy.model import Policy
from gatekeeper.policy.resale import OFF
from gatekeeper.request_body import BODY_FACTS, BodyFacts
from gatekeeper.resale.event import INVALID_REASONS, Event, network_of
from gatekeeper.resale.scorer import Scorer
from gatekeeper.resale.shared import absorb, collect
from gatekeeper.resale.snapshot import FLUSH_EVERY, Snapshot
from gatekeeper.resale.state import ResaleTracker
from gatekeeper.store.base import Store
from gatekeeper.store.signals import SignalStore
from gatekeeper.types import Scope

log = logging.getLogger("gatekeeper")

HEADER: Final = b"x-gatekeeper-resale"
PLACES: Final = 16_384
"""Client places remembered per runtime (by decision-record key): a flood of distinct
clients only costs recomputing them."""
_new: Final = tuple.__new__


def resale_on(policy: Policy) -> bool:
    """Whether any tenant's score is on (shadow or enforce): otherwise there is no stage."""
    return policy.resale.mode != OFF or any(
        t.resale is not None and t.resale.mode != OFF for t in policy.tenants.values())


class ResaleMemory:
    """What the score keeps for the process across policy reloads: every key's state, the
    keys it suspended, where it reports (audit, metrics), the key store it suspends keys in."""

    def __init__(self, policy: Policy, store: Store, audit: AuditLog,
                 on_action: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.tracker = ResaleTracker(policy.resale.max_keys)
        self.suspended: dict[str, float] = {}
        """Key id -> until when this process refuses it itself: for good until the store
        holds the status, then ``keys.cache_ttl`` and a second more (no cached allowed answer
        can outlive that), after which the store's status governs."""
        self.clock = clock
        self.store = store
        self.audit = audit
        self.on_action = on_action
        """Called with the action for every request the score acted on (or would have)."""
        self.tasks: set[asyncio.Task[None]] = set()
        """Store writes in flight (suspensions), held so they are not collected."""
        self.changed: dict[str, str | None] = {}
        """Keys scored again since the last batch of snapshots: key id -> tenant."""
        self.ttl = policy.resale.long_window
        """How long a snapshot is kept in the store."""
        self.signals = store if isinstance(store, SignalStore) else None
        """Where the fleet pools its signals (``shared.py``); None: this process alone."""
        self.shared_since = clock()
        """When the last batch of shared signals was collected."""
        self.every = FLUSH_EVERY
        """Seconds between two batches (signals shared, snapshots written)."""

    async def share(self) -> int:
        """Send the signals of the keys used since the last batch and take back the fleet's
        counts, in one round trip; the number of keys. A store that fails loses this batch's
        news (logged): a value used again is sent again."""
        if self.signals is None:
            return 0
        now = self.clock()
        found = collect(self.tracker, self.shared_since)
        self.shared_since = now
        if not found:
            return 0
        try:
            counts = await self.signals.share_signals([signals for _, signals in found], now)
        except Exception as exc:
            log.warning("resale signals not shared (%d keys): %s", len(found),
                        type(exc).__name__)
            return 0
        for (state, _), found_counts in zip(found, counts, strict=True):
            absorb(state, found_counts, now)
        return len(found)

    async def flush(self) -> int:
        """Write the snapshots of the keys scored since the last call, in one batch; the
        number written. A store that fails loses this batch (logged): the next has them."""
        changed = dict(self.changed)
        self.changed.clear()  # the same dict the scorers hold
        found = []
        for key_id, tenant in changed.items():
            state = self.tracker.get(key_id)
            if state is not None and state.scored is not None:
                score = state.scored
                found.append(Snapshot(key_id, tenant, state.scored_at,
                                      score.total, state.would, tuple(score.reasons(5))))
        if found:
            try:
                await self.store.put_scores(found, self.ttl, self.clock())
            except Exception as exc:
                log.warning("resale score snapshots not written (%d keys): %s", len(found),
                            type(exc).__name__)
                return 0
        return len(found)

    async def run(self) -> None:
        """Share signals (a store that pools them) and flush snapshots every ``every``
        seconds until cancelled (the middleware's lifespan)."""
        while True:
            await asyncio.sleep(self.every)
            if self.signals is not None:
                await self.share()
            await self.flush()

    def suspend_later(self, key_id: str, now: float, hold: float) -> None:
        """Store the key's status ``suspended`` off the hot path."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._suspend(key_id, now, hold))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _suspend(self, key_id: str, now: float, hold: float) -> None:
        from gatekeeper.key_admin import set_status
        from gatekeeper.principal import KeyStatus

        try:
            await set_status(self.store, key_id, KeyStatus.SUSPENDED, now)
            if key_id in self.suspended:
                self.suspended[key_id] = self.clock() + hold
            log.warning("resale score suspended key %s (gatekeeper keys reinstate %s lifts it)",
                        key_id, key_id)
        except Exception as exc:  # the in-process suspension holds; say why the store's did not
            log.error("resale score could not store the suspension of key %s: %s",
                      key_id, type(exc).__name__)


class ResaleStage:
    """The score for one runtime (policy); its state lives in the process's ``ResaleMemory``."""

    __slots__ = ("header", "hold", "locate", "memory", "places", "reader", "scorer")

    def __init__(self, policy: Policy, memory: ResaleMemory, reader: FactReader,
                 locate: Callable[[IPAddr], Location]) -> None:
        self.memory = memory
        self.scorer = Scorer(policy, tracker=memory.tracker, suspended=memory.suspended,
                             changed=memory.changed)
        self.reader = reader
        self.locate = locate
        self.places: dict[Any, tuple[Any, ...]] = {}
        """Record key -> the client's part of an event (address, network, country, shared,
        known network, point): what a reused decision record no longer computes."""
        self.header = policy.resale.flag_header
        self.hold = policy.keys.cache_ttl + 1.0

    def run(self, decision: Decision, facts: RequestFacts | None, scan: Scan,
            key: tuple[Any, ...] | None, scope: Scope, below: str, now: float,
            charge: AnyCharge | None) -> Decision:
        """The decision after the score; counts the request. For a decision with a
        principal (a known key, allowed or refused after authentication)."""
        scorer = self.scorer
        acted, before, would = scorer.judge(decision, now)
        tenant = decision.tenant
        settings = scorer._settings.get(tenant) or scorer.settings(tenant)
        if settings.mode == OFF:
            return decision
        place = self.places.get(key) if key is not None else None
        if place is None or place[6] != tenant:
            place = self._place(facts, scan, scope, below, settings, tenant)
            if key is not None:
                if len(self.places) >= PLACES:
                    self.places.clear()
                self.places[key] = place
        method: str = scope.get("method", "GET")
        agent = scan[6]
        point = place[5]
        key_id: str = decision.key_id  # type: ignore[assignment]  # a principal's
        body: BodyFacts | None = scope.pop(BODY_FACTS, None)
        if body is None:
            user = model = None
            tiny = False
        else:
            user, model, most = body[5], body[0], body[1]
            tiny = most is not None and most <= 1
        scorer.tracker.observe(_new(Event, (
            now, key_id, place[0], place[1], place[2],
            None if agent is None else agent.decode("latin-1"), user, model,
            method == "GET" and scope["path"].rstrip("/").endswith("/models"), tiny,
            decision.reason.code in INVALID_REASONS, 0.0, place[3], place[4],
            None if point is None else _new(Sighting, (*point, now)))), settings)
        if would is ALLOW:
            return acted
        return self._acted(decision, acted, before, would, scope, now, charge)

    def _acted(self, decision: Decision, acted: Decision, before: Any, would: str,
               scope: Scope, now: float, charge: AnyCharge | None) -> Decision:
        memory = self.memory
        key_id = decision.key_id or ""
        if memory.on_action is not None:
            memory.on_action(would)
        state = memory.tracker.keys.get(key_id)
        if state is not None and state.announced != would:
            state.announced = would
            memory.audit.resale(decision, would, before.total, before.reasons(), now, scope)
        if acted.action == SUSPEND and decision.allowed:
            memory.suspend_later(key_id, now, self.hold)
        if not acted.allowed and decision.allowed and charge is not None:
            charge.settle(None)  # refused after charging: give its slots back
        if self.header and acted.allowed and acted.action != ALLOW:
            acted = carrying(acted, (*acted.headers, (HEADER, acted.action.encode())))
        return acted

    def _place(self, facts: RequestFacts | None, scan: Scan, scope: Scope, below: str,
               settings: Any, tenant: str | None) -> tuple[Any, ...]:
        if facts is None:  # a reused record: its facts were not computed for this request
            facts = self.reader.facts(scan, scope.get("method", "GET"), scope["path"], below,
                                      scope.get("client"))
        addr = facts.client
        location = UNKNOWN if addr is None else self.locate(addr)
        network, known_network = network_of(settings, addr, location)
        found = sighting(location, 0.0)
        return (None if addr is None else addr.text, network, location.country,
                addr is not None and addr in settings.known.nat_egress, known_network,
                None if found is None else found[:3], tenant)


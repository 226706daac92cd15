"""One compiled runtime: the policy and everything precomputed from it, swapped whole.

The middleware reads ``gatekeeper.runtime`` once at the start of a request and uses only
that object until the request is decided, so a reload (one assignment) can never give a
request half of one policy and half of another. Caches that depend on the policy (route
answers, issuer verifiers, decision records) live here and die with it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from gatekeeper.admission import Admission, BudgetWatch
from gatekeeper.auth import Authenticator
from gatekeeper.breaker import Breaker
from gatekeeper.clock import Clock
from gatekeeper.decision import Decision
from gatekeeper.facts import FactReader
from gatekeeper.geo.stage import GeoStage
from gatekeeper.jwt_verifier import JwtVerifier
from gatekeeper.policy.model import Policy
from gatekeeper.resale.stage import ResaleMemory, ResaleStage, resale_on
from gatekeeper.store.base import Store
from gatekeeper.store.counters import CounterStore
from gatekeeper.store.locations import LocationStore, MemoryLocationStore
from gatekeeper.store.memory_counters import MemoryCounterStore

ROUTE_MEMO_SIZE = 4096
DECISION_RECORDS = 65_536


class DecisionRecord:
    """An allowed decision reused for the same raw inputs until it may no longer be trusted.

    ``fresh_until`` (monotonic) is never later than the credential's cache entry allows
    (``keys.cache_ttl``); ``expires_at`` (wall time) is the credential's own expiry.
    ``admission`` is what the credential still has to pass per request (its limits), compiled
    once with the record; None when its tenant has nothing to check.
    """

    __slots__ = ("admission", "decision", "expires_at", "fresh_until")

    def __init__(self, decision: Decision, fresh_until: float, expires_at: float,
                 admission: Admission | None = None) -> None:
        self.decision = decision
        self.fresh_until = fresh_until
        self.expires_at = expires_at
        self.admission = admission


class Runtime:
    __slots__ = ("authenticator", "budget_watch", "clock", "counters", "decisions", "geo",
                 "keyed_by_path", "policy", "reader", "resale", "route_memo", "routes")

    def __init__(self, policy: Policy, store: Store, pepper: bytes, clock: Clock,
                 counters: CounterStore | None = None,
                 locations: LocationStore | None = None,
                 breaker: Breaker | None = None,
                 resale: ResaleMemory | None = None,
                 budget_watch: BudgetWatch | None = None) -> None:
        """``counters`` (limits), ``locations`` (impossible travel's last sightings), the
        key store's ``breaker`` and ``resale`` (the score's per-key state) belong to the
        process, not the policy: pass the same ones to every runtime so a reload keeps every
        count, sighting, outage state and score."""
        self.policy = policy
        self.clock = clock
        self.budget_watch = budget_watch
        """Given to the admissions of tenants with a webhook target (``Notifier.budgets``)."""
        self.counters: CounterStore = counters if counters is not None else MemoryCounterStore()
        """Owned by the Gatekeeper, not the policy: a reload keeps every count."""
        self.routes = policy.routes
        scoring = resale is not None and resale_on(policy)
        self.reader = FactReader(policy, user_agent=scoring)
        """Reads the user agent only for the resale score."""
        self.authenticator = Authenticator(
            store, pepper, cache_ttl=policy.keys.cache_ttl, clock=clock,
            verifier=JwtVerifier(policy.issuers, clock=clock) if policy.issuers else None,
            breaker=breaker, fail_open=policy.on_store_error == "fail_open",
            prefixes=policy.keys.prefixes)
        self.keyed_by_path = self.reader.reads_path_tenant
        """A tenant named in the path makes the path part of what a decision depends on."""
        self.route_memo: dict[Any, str | None] = {}
        """Request-target (with its root_path) -> '' public, the canonical path below the
        mount when protected, None when it names no path. Bounded: targets are client text."""
        self.decisions: OrderedDict[tuple[Any, ...], DecisionRecord] = OrderedDict()
        self.geo = GeoStage(policy, MemoryLocationStore() if locations is None else locations,
                            clock.now)
        """Country rules and impossible travel; opens the policy's geo files (a new runtime
        reopens them: a reload picks up replaced files)."""
        geo = self.geo
        self.resale = ResaleStage(policy, resale, self.reader,
                                  lambda addr: geo.resolver.lookup(addr)) \
            if scoring and resale is not None else None
        """The resale score (``resale/stage.py``); None when no tenant's score is on."""

"""One compiled runtime: the policy and everything precomputed from it, swapped whole.

The middleware reads ``gatekeeper.runtime`` once at the start of a request and uses only
that object until the request is decided, so a reload (one assignment) can never give a
request half of one policy and half of another. Caches that depend on the policy (route
answers, issuer verifiers, decision records) live here and die with it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from gatekeeper.auth import Authenticator
from gatekeeper.clock import Clock
from gatekeeper.decision import Decision
from gatekeeper.errors import ConfigError, PolicyError
from gatekeeper.facts import FactReader
from gatekeeper.geo.stage import GeoStage
from gatekeeper.jwt_verifier import JwtVerifier
from gatekeeper.policy.model import Policy
from gatekeeper.store.base import Store
from gatekeeper.store.locations import LocationStore, MemoryLocationStore

ROUTE_MEMO_SIZE = 4096
DECISION_RECORDS = 65_536


class DecisionRecord:
    """An allowed decision reused for the same raw inputs until it may no longer be trusted.

    ``fresh_until`` (monotonic) is never later than the credential's cache entry allows
    (``keys.cache_ttl``); ``expires_at`` (wall time) is the credential's own expiry. The
    limits issue hangs its per-credential counters here.
    """

    __slots__ = ("decision", "expires_at", "fresh_until")

    def __init__(self, decision: Decision, fresh_until: float, expires_at: float) -> None:
        self.decision = decision
        self.fresh_until = fresh_until
        self.expires_at = expires_at


class Runtime:
    __slots__ = ("authenticator", "decisions", "geo", "keyed_by_path", "policy", "reader",
                 "route_memo", "routes")

    def __init__(self, policy: Policy, store: Store, pepper: bytes, clock: Clock,
                 locations: LocationStore | None = None) -> None:
        """``locations``: where impossible travel keeps each key's last sighting; pass the
        same one to every runtime of a process so a reload keeps it."""
        refuse_unenforced(policy)
        self.policy = policy
        self.routes = policy.routes
        self.reader = FactReader(policy)
        self.authenticator = Authenticator(
            store, pepper, cache_ttl=policy.keys.cache_ttl, clock=clock,
            verifier=JwtVerifier(policy.issuers, clock=clock) if policy.issuers else None)
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


def unenforced(policy: Policy) -> list[ConfigError]:
    """Rules this version validates but does not enforce yet (limits)."""
    found = []
    for name, tenant in policy.tenants.items():
        if not tenant.limits.empty:
            found.append(ConfigError(f"tenants.{name}.limits", "(rules)", _UNENFORCED))
    return found


_UNENFORCED = ("is validated but not enforced by this version yet; a server refuses to run a "
               "policy that looks stricter than it is (remove it until it is enforced)")


def refuse_unenforced(policy: Policy) -> None:
    """A security policy must never look stricter than what runs: refuse it whole."""
    errors = unenforced(policy)
    if errors:
        raise PolicyError(errors, policy.source)

"""The compiled policy: plain frozen data, everything precomputed for the hot path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gatekeeper.client_address import ClientAddressPolicy
from gatekeeper.geo.rules import CountryRule
from gatekeeper.geo.travel import TravelRule
from gatekeeper.keys import PREFIX, PREFIXES
from gatekeeper.limits.spend import NO_PRICES, Prices
from gatekeeper.networks import EMPTY, NetworkSet
from gatekeeper.policy.audit import AuditStreamPolicy
from gatekeeper.policy.geo import GeoPolicy
from gatekeeper.policy.issuers import IssuerPolicy
from gatekeeper.policy.limits import NO_LIMITS, TenantLimits
from gatekeeper.policy.notify import NotifyTarget
from gatekeeper.policy.request_policy import NO_REQUEST_RULES, RequestPolicy
from gatekeeper.policy.resale import RESALE_OFF, ResaleSettings
from gatekeeper.reasons import Reason
from gatekeeper.routes import RoutePolicy

DEFAULT_PEPPER_ENV = "GATEKEEPER_PEPPER"
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    name: str
    allowed_networks: NetworkSet = EMPTY
    """Every key of the tenant is held to these too (a key's own networks narrow, never widen)."""
    disabled: bool = False
    countries: CountryRule | None = None
    """Where the tenant's keys may be used from; None: anywhere, and no lookup is made."""
    limits: TenantLimits = NO_LIMITS
    """Rates, concurrency and quotas (``policy/limits.py``); none by default, costing nothing."""
    request: RequestPolicy = NO_REQUEST_RULES
    """What requests may ask for (``policy/request_policy.py``); no rules by default."""
    travel: TravelRule | None = None
    """Impossible travel between consecutive uses of one key; None: not checked, no state."""
    resale: ResaleSettings | None = None
    """The tenant's own resale settings (``policy/resale.py``); None: the policy's."""
    notify: NotifyTarget | None = None
    """Where the tenant's owner gets webhooks (``policy/notify.py``); None: nowhere."""


@dataclass(frozen=True, slots=True)
class RequestTenantPolicy:
    """Where a request may name its tenant: a claim to check, never an identity."""

    header: str | None = None
    path_segment: int | None = None


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    cache_ttl: float = 1.0
    """Seconds a verified key is trusted without asking the store: the revocation delay."""
    pepper_env: str = DEFAULT_PEPPER_ENV
    pepper_file: str | None = None
    prefix: str = PREFIX
    """What new keys start with (``gk_`` unless a deployment registers its own with GitHub)."""
    accepted_prefixes: tuple[str, ...] = ()
    """Earlier prefixes whose keys still work (and still get revoked when they leak)."""

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Every prefix a key may carry, the current one first."""
        if not self.accepted_prefixes:
            return PREFIXES if self.prefix == PREFIX else (self.prefix,)
        return (self.prefix, *self.accepted_prefixes)


@dataclass(frozen=True, slots=True)
class Policy:
    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict)
    routes: RoutePolicy = field(default_factory=RoutePolicy)
    client_address: ClientAddressPolicy = field(default_factory=ClientAddressPolicy)
    request_tenant: RequestTenantPolicy = field(default_factory=RequestTenantPolicy)
    keys: KeyPolicy = field(default_factory=KeyPolicy)
    issuers: tuple[IssuerPolicy, ...] = ()
    geo: GeoPolicy = field(default_factory=GeoPolicy)
    store: str | None = field(default=None, repr=False)  # its URL may hold a password
    source: str = "policy"
    answers: Mapping[Reason, Reason] = field(default_factory=dict)
    """What a refused client is told instead of the real reason (``refusals.conceal``)."""
    prices: Prices = NO_PRICES
    """Dollars per million tokens per model (``policy/prices.py``): what spend limits count."""
    resale: ResaleSettings = RESALE_OFF
    """The resale score's defaults (``policy/resale.py``); ``off`` without a section."""
    audit_stream: AuditStreamPolicy | None = None
    """Where audit lines also go: a Redis stream (``policy/audit.py``); None: the logger only."""
    on_store_error: str = "fail_closed"
    """A failing store: ``fail_closed`` refuses 503; ``fail_open`` keeps deciding with the
    keys already verified and limits counted in this process (``store/guarded.py``)."""

    def resale_for(self, tenant: str | None) -> ResaleSettings:
        """The resale settings a tenant's keys are scored with."""
        found = self.tenants.get(tenant) if tenant is not None else None
        return found.resale if found is not None and found.resale is not None else self.resale

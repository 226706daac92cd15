"""Who a verified credential says the caller is: the common shape of API keys and JWTs."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from gatekeeper.geo.rules import CountryRule
from gatekeeper.networks import EMPTY, NetworkSet
from gatekeeper.policy.limits import LimitSet


class KeyStatus(enum.StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    SUSPENDED = "suspended"


class CredentialKind(enum.StrEnum):
    API_KEY = "api_key"
    JWT = "jwt"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: CredentialKind
    key_id: str
    """The key id, or ``jwt:<issuer name>:<sub>`` for a token: what limits and audit key on."""
    tenant: str
    status: KeyStatus = KeyStatus.ACTIVE
    expires_at: float | None = None
    networks: NetworkSet = EMPTY
    """The credential's own networks; empty means only the tenant's apply."""
    labels: Mapping[str, str] = field(default_factory=dict)
    limits: LimitSet | None = None
    """The key's own limits, compiled; they narrow the tenant's (``overrides.narrow``)."""
    countries: CountryRule | None = None
    """The credential's own countries (``keys create --country``); None: only the tenant's
    rule applies. It narrows the tenant's: a request must pass both."""

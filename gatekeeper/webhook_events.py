"""What an owner webhook says: one JSON object per event, built by pure functions.

    {"id": "evt_5c1f...", "type": "budget.warning", "created": 1764500000,
     "tenant": "acme", "key_id": "3fA9kQ2LmZ8x",
     "data": {"scope": "key", "unit": "requests", "window": "2026-11-30", "limit": 1000,
              "used": 800, "percent": 80}}

Never a key, a secret or a storage key; a key id is public (it is printed by ``keys list``).
A budget event's id is derived from its counter, mark and window, so the same crossing seen by
two replicas (a refused request on each) carries one id: receivers deduplicate by ``id``.
Every other event gets a random id.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any, NamedTuple

from gatekeeper.budgets import EXHAUSTED, Crossing, scope_of, window_of
from gatekeeper.decision import Decision
from gatekeeper.policy.notify import BUDGET_EXHAUSTED, BUDGET_WARNING, KEY_FLAGGED


class Event(NamedTuple):
    type: str
    """One of ``policy.notify.EVENTS``: a bounded label for the metrics."""
    tenant: str
    id: str
    body: bytes
    """The JSON sent, signed as it is."""


def event(kind: str, tenant: str, key_id: str | None, now: float, data: dict[str, Any],
          event_id: str | None = None) -> Event:
    event_id = event_id or "evt_" + secrets.token_hex(12)
    body = json.dumps({"id": event_id, "type": kind, "created": int(now), "tenant": tenant,
                       "key_id": key_id, "data": data}, separators=(",", ":"),
                      allow_nan=False).encode()
    return Event(kind, tenant, event_id, body)


def key_id_of(credential: str) -> str | None:
    """The key id in a plan's credential part (``k<id>``); None for a JWT's hashed subject."""
    return credential[1:] if credential.startswith("k") else None


def budget_event(tenant: str, credential: str, crossing: Crossing, now: float) -> Event:
    counter = crossing.counter
    kind = BUDGET_EXHAUSTED if crossing.mark == EXHAUSTED else BUDGET_WARNING
    scope = scope_of(counter)
    digest = hashlib.sha256(f"{counter.key}|{crossing.mark}".encode()).hexdigest()[:24]
    return event(kind, tenant, key_id_of(credential), now,
                 {"scope": scope, "unit": counter.unit, "window": window_of(counter),
                  "limit": counter.limit, "used": max(0, crossing.used),
                  "percent": crossing.mark}, "evt_" + digest)


def flagged_event(decision: Decision, now: float) -> Event:
    return event(KEY_FLAGGED, decision.tenant or "", decision.key_id, now,
                 {"reason": decision.reason.code, "signals": list(decision.signals),
                  "detail": decision.detail})


def key_event(kind: str, tenant: str, key_id: str, now: float,
              detail: str = "") -> Event:
    """``key.suspended``, ``key.revoked`` or ``key.leaked``: a key's status changed."""
    return event(kind, tenant, key_id, now, {"detail": detail})

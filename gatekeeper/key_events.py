"""A key's status changed through the CLI (``keys suspend``/``revoke``): tell its owner, and
the audit stream when the policy has one.

The CLI posts the webhook itself, right after the store accepted the change, rather than
every server reacting to the store's change notices: one notice per change whatever the
number of replicas, with any store (SQLite has no notices), and the operator sees at once
whether the owner was told. The delivery is the servers' (signed, retried with back-off,
each attempt bounded by its timeout); a failure is reported, and the status change stands.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gatekeeper.audit import AuditLog
from gatekeeper.audit_stream import audit_stream_for
from gatekeeper.clock import SystemClock
from gatekeeper.errors import ConfigError
from gatekeeper.policy.model import Policy
from gatekeeper.webhook_events import key_event
from gatekeeper.webhooks import deliver, resolve_target


async def announce(policy: Policy, kind: str, tenant: str, key_id: str, now: float, *,
                   detail: str = "", environ: Mapping[str, str] | None = None,
                   attempts: int = 4, timeout: float = 2.0, backoff: float = 0.5) -> str | None:
    """Deliver ``kind`` (``key.suspended``, ``key.revoked``, ``key.leaked``) for ``key_id``
    to its tenant's target. Returns what happened, for the operator: None when the tenant
    has no target or does not want the event, a warning when it was not delivered."""
    try:
        target = resolve_target(policy, tenant, os.environ if environ is None else environ)
    except ConfigError as exc:
        return f"warning: {kind} not sent: {exc}"
    if target is None or kind not in target.events:
        return None
    found = key_event(kind, tenant, key_id, now, detail)
    import httpx  # only when a webhook is sent

    async with httpx.AsyncClient(follow_redirects=False) as client:
        accepted, tries = await deliver(client, target, found, SystemClock(), attempts=attempts,
                                        timeout=timeout, base=backoff, cap=backoff * 8)
    if accepted:
        return f"notified {target.endpoint} ({kind})"
    return f"warning: {kind} not delivered to {target.endpoint} after {tries} attempt(s)"


async def record(policy: Policy, store: object, kind: str, tenant: str, key_id: str,
                 now: float, detail: str = "") -> None:
    """Write the change into the policy's audit stream (``audit.redis_stream``), if any, and
    on the ``gatekeeper.audit`` logger."""
    audit = AuditLog()
    if policy.audit_stream is not None:
        audit.stream = audit_stream_for(policy, store, None)
        audit.stream.start()
    audit.key_changed(kind, tenant, key_id, now, detail)
    await audit.close_stream()

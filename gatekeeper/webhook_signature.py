"""Signing owner webhooks, and the receiver's check: HMAC-SHA256 over timestamp and body.

The scheme is Stripe's: the header ``Gatekeeper-Signature: t=<unix seconds>,v1=<hex>`` where
``<hex>`` is HMAC-SHA256, keyed with the tenant's secret, over ``b"<t>." + body`` (the raw
bytes received, before any JSON parsing). A receiver recomputes it, compares in constant time,
and refuses a timestamp more than ``TOLERANCE`` seconds from its own clock, so a captured
delivery cannot be replayed later. ``verify_webhook`` is that recipe; a receiver in another language
follows the README's five lines.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "gatekeeper-signature"
TOLERANCE = 300.0
"""Seconds a signed timestamp may differ from the receiver's clock."""


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``b"<timestamp>." + body``."""
    return hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign_webhook(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Gatekeeper-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify_webhook(secret: bytes, header: str | None, body: bytes, now: float,
           tolerance: float = TOLERANCE) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its time is within
    ``tolerance`` seconds of ``now``. Several ``v1`` values (a secret being rotated) may be
    given; any one matching is enough."""
    if not header:
        return False
    timestamp: int | None = None
    given: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) < 16:
            timestamp = int(value)
        elif name == "v1":
            given.append(value)
    if timestamp is None or not given or abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, value.encode()) for value in given)

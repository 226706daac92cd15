"""The ``audit`` section: an optional Redis stream that receives every audit line.

    audit:
      redis_stream:
        url: redis://audit.internal:6379/0   # optional: the store's URL when it is Redis
        key: gk:audit                        # the stream's key
        maxlen: 100000                       # about this many entries are kept (MAXLEN ~)

Read once at startup: a reload that changes it is refused (restart instead), like the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gatekeeper.errors import ConfigError, redact_url
from gatekeeper.policy.fields import Fields

DEFAULT_KEY = "gk:audit"
DEFAULT_MAXLEN = 100_000
_SCHEMES = ("redis", "rediss")


@dataclass(frozen=True, slots=True)
class AuditStreamPolicy:
    url: str | None = field(default=None, repr=False)
    """None: the store's URL (then the store must be Redis). It may hold a password."""
    key: str = DEFAULT_KEY
    maxlen: int = DEFAULT_MAXLEN


def load_audit(fields: Fields) -> AuditStreamPolicy | None:
    """The ``audit`` section's stream; None without one."""
    stream = None
    if fields.has("redis_stream"):
        section = fields.section("redis_stream")
        url = section.get("url", str, None)
        key = section.get("key", str, DEFAULT_KEY)
        maxlen = section.whole("maxlen", 100, 100_000_000)
        section.finish()
        if url is not None and url.partition("://")[0] not in _SCHEMES:
            section.error("url", redact_url(url), "must be a redis:// or rediss:// URL")
        if not key or len(key) > 200 or not key.isprintable():
            section.error("key", key, "must be 1 to 200 printable characters")
        stream = AuditStreamPolicy(url, key, DEFAULT_MAXLEN if maxlen is None else maxlen)
    fields.finish()
    return stream


def stream_url(stream: AuditStreamPolicy, store: str | None) -> str:
    """Where the stream lives: its own URL, else the store's, which must then be Redis."""
    url = stream.url or store or ""
    if url.partition("://")[0] not in _SCHEMES:
        raise ConfigError("audit.redis_stream.url", "(missing)",
                          "is required when the store is not a single Redis (redis://)")
    return url

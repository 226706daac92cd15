"""Stores by URL: ``memory://``, ``sqlite:///relative.db``, ``sqlite:////absolute.db``."""

from __future__ import annotations

from gatekeeper.errors import ConfigError, redact_url
from gatekeeper.store.base import Store
from gatekeeper.store.memory import MemoryStore
from gatekeeper.store.sqlite import SQLiteStore

DEFAULT_STORE_URL = "sqlite:///gatekeeper-keys.db"


def store_from_url(url: str, field: str = "store") -> Store:
    """Build a store from its URL; a bad URL is a ConfigError naming ``field`` (and showing the
    URL with its password masked)."""
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "memory":
        return MemoryStore(url)
    if sep and scheme == "sqlite":
        if not rest.startswith("/") or len(rest) < 2 or rest.endswith("/"):
            raise ConfigError(field, shown, "must look like sqlite:///relative.db or "
                                          "sqlite:////absolute/path.db")
        return SQLiteStore(rest[1:], url)
    if sep and scheme in ("redis", "rediss", "redis+cluster"):
        raise ConfigError(field, shown, "names the Redis store, which this version does not ship "
                                      "yet; use sqlite:// or memory://")
    raise ConfigError(field, shown, "is not a store URL (memory://, sqlite:///path.db)")


__all__ = ["DEFAULT_STORE_URL", "MemoryStore", "SQLiteStore", "Store", "store_from_url"]

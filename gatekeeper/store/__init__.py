"""Stores by URL: ``memory://``, ``sqlite:///relative.db``, ``sqlite:////absolute.db``.

A relative SQLite path is relative to the working directory here; a policy file makes the
ones it names relative to its own directory (``resolve_store_url``), so the CLI and every
server find the same file wherever they were started.
"""

from __future__ import annotations

from pathlib import Path

from gatekeeper.errors import ConfigError, redact_url
from gatekeeper.store.base import Store
from gatekeeper.store.memory import MemoryStore
from gatekeeper.store.sqlite import SQLiteStore

DEFAULT_STORE_URL = "sqlite:///gatekeeper-keys.db"


def store_from_url(url: str, field: str = "store", *, create: bool = True) -> Store:
    """Build a store from its URL; a bad URL is a ConfigError naming ``field`` (and showing the
    URL with its password masked). With ``create=False`` (servers) a missing SQLite file is a
    StoreNotFoundError on first use instead of a new, empty store."""
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "memory":
        return MemoryStore(url)
    if sep and scheme == "sqlite":
        if not rest.startswith("/") or len(rest) < 2 or rest.endswith("/"):
            raise ConfigError(field, shown, "must look like sqlite:///relative.db or "
                                          "sqlite:////absolute/path.db")
        return SQLiteStore(rest[1:], url, create=create)
    if sep and scheme in ("redis", "rediss", "redis+cluster"):
        raise ConfigError(field, shown, "names the Redis store, which this version does not ship "
                                      "yet; use sqlite:// or memory://")
    raise ConfigError(field, shown, "is not a store URL (memory://, sqlite:///path.db)")


def resolve_store_url(url: str, directory: Path) -> str:
    """``sqlite:///keys.db`` made absolute against ``directory``; other URLs as they are."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "sqlite" and rest.startswith("/") and not Path(rest[1:]).is_absolute():
        return f"sqlite:///{directory / rest[1:]}"
    return url


__all__ = ["DEFAULT_STORE_URL", "MemoryStore", "SQLiteStore", "Store", "resolve_store_url",
           "store_from_url"]

"""Stores by URL: ``memory://``, ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
``redis://host:6379/0`` and ``rediss://`` (TLS; both keys and counters, ``store/redis.py``),
``redis+cluster://host:port,host:port`` (``store/redis_cluster.py``).

A relative SQLite path is relative to the working directory here; a policy file makes the
ones it names relative to its own directory (``resolve_store_url``), so the CLI and every
server find the same file wherever they were started.
"""

from __future__ import annotations

import re
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
    if sep and scheme in ("redis", "rediss"):
        if not rest or rest.startswith("/"):
            raise ConfigError(field, shown, "must name a host: redis://host:6379/0 or "
                                          "rediss://user:password@host:6380/0")
        from gatekeeper.store.redis import RedisStore  # redis.asyncio takes 0.3 s to import

        try:
            return RedisStore(url)
        except ValueError as exc:  # redis-py's URL parser: a bad port, db or option
            raise ConfigError(field, shown, _redis_url_problem(exc)) from None
    if sep and scheme in ("redis+cluster", "rediss+cluster"):
        from gatekeeper.store.redis_cluster import RedisClusterStore

        try:
            return RedisClusterStore(url)
        except ValueError as exc:
            raise ConfigError(field, shown, "is not a valid Redis Cluster URL "
                                          f"(redis+cluster://host:port,host:port): {exc}") from None
    raise ConfigError(field, shown, "is not a store URL (memory://, sqlite:///path.db, "
                                    "redis://host:6379/0)")


def _redis_url_problem(exc: ValueError) -> str:
    """What redis-py found wrong, without its text: it quotes URL parts, and a password with a
    '/' in it is parsed as the port (and would be printed)."""
    option = re.search(r"Invalid value for '(\w+)'", str(exc))
    if option:
        return f"is not a valid Redis URL: option {option.group(1)!r} has an invalid value"
    if "Port" in str(exc):
        return "is not a valid Redis URL: its port is not a number"
    return "is not a valid Redis URL (redis://[user:password@]host:port/db)"


def resolve_store_url(url: str, directory: Path) -> str:
    """``sqlite:///keys.db`` made absolute against ``directory``; other URLs as they are."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "sqlite" and rest.startswith("/") and not Path(rest[1:]).is_absolute():
        return f"sqlite:///{directory / rest[1:]}"
    return url


__all__ = ["DEFAULT_STORE_URL", "MemoryStore", "SQLiteStore", "Store", "resolve_store_url",
           "store_from_url"]

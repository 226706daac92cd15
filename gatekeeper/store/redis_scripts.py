"""The Redis store's Lua scripts (``store/lua/*.lua``, each after ``prelude.lua``), called by SHA.

A script is sent once (``SCRIPT LOAD``, at ``RedisStore.connect`` or on first use), then every
call is one EVALSHA. After a restart or a failover the server has forgotten it: the call answers
NOSCRIPT, and the script is loaded again and called again, once.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError


class LuaScript:
    __slots__ = ("name", "sha", "text")

    def __init__(self, name: str, body: str = "counters") -> None:
        """``name``: the script's own head (its inputs), sent between ``prelude`` and ``body``
        (the work every counter script shares)."""
        self.name = name
        lua = files("gatekeeper.store") / "lua"
        self.text = "\n".join((lua / f"{part}.lua").read_text("utf-8")
                              for part in ("prelude", name, body))
        self.sha = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()

    async def load(self, client: Redis | RedisCluster) -> None:
        await client.script_load(self.text)

    async def __call__(self, client: Redis | RedisCluster, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(client)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


APPLY = LuaScript("apply")
RELEASE = LuaScript("release")
RECONCILE = LuaScript("reconcile")
SETTLE = LuaScript("settle")
SCRIPTS = (APPLY, RELEASE, RECONCILE, SETTLE)

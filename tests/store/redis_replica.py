"""One gatekeeper replica as its own process, for the cross-process tests: uvicorn on a given
port, keys and counters on the given Redis or Redis Cluster (``redis+cluster://``). ``python -m
tests.store.redis_replica PORT REDIS_URL POLICY_FILE`` (the policy names its pepper file)."""

from __future__ import annotations

import sys

import uvicorn

from gatekeeper import Gatekeeper, load_policy
from gatekeeper.store.redis import RedisStore
from gatekeeper.store.redis_cluster import RedisClusterStore
from gatekeeper.types import Receive, Scope, Send


async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def main(port: str, redis_url: str, policy_file: str) -> None:
    # seconds of slack, not the defaults' milliseconds: the tests count, on a loaded machine
    kind = RedisClusterStore if redis_url.startswith("redis+cluster://") else RedisStore
    store = kind(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    app = Gatekeeper(upstream, load_policy(policy_file), store=store, counters=store)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", lifespan="on",
                proxy_headers=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])

"""One gatekeeper replica as its own process, for the cross-process tests: uvicorn on a given
port, keys and counters on the given Redis or Redis Cluster (``redis+cluster://``). ``python -m
tests.store.redis_replica PORT REDIS_URL POLICY_FILE`` (the policy names its pepper file);
``replicas(...)`` starts several and waits until they answer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
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


@asynccontextmanager
async def replicas(count: int, redis_url: str, policy_file: Path) -> AsyncIterator[list[str]]:
    """``count`` replica processes on free ports; yields their base URLs once each answers,
    stops them after."""
    from tests.redis_server import free_port
    from tests.serving import wait_until_up
    from tests.test_cli import clean_env

    ports = [free_port() for _ in range(count)]
    processes = [subprocess.Popen([sys.executable, "-m", "tests.store.redis_replica", str(port),
                                   redis_url, str(policy_file)], cwd=ROOT, env=clean_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for port in ports]
    try:
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base, process in zip(bases, processes, strict=True):
            await anyio.to_thread.run_sync(wait_until_up, base, process)
        yield bases
    finally:
        for process in processes:
            process.terminate()
            process.communicate(timeout=10)


ROOT = Path(__file__).parent.parent.parent

if __name__ == "__main__":
    main(*sys.argv[1:4])

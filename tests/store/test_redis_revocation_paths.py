"""A key revoked by the CLI reaches two running servers (two uvicorn processes on one Redis):
within a second through pub/sub, whatever ``keys.cache_ttl``; and with pub/sub blocked, within
``keys.cache_ttl``, when each server's cached verification runs out and it reads the record
again. Blocked two ways: PUBLISH disabled on the server (the CLI's announcement is lost; it says
so), and an ACL user for the servers that may not SUBSCRIBE (they keep retrying, and log it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from gatekeeper import key_admin, load_policy
from gatekeeper.store.redis import RedisStore
from tests.redis_nodes import RedisNode
from tests.redis_server import free_port
from tests.serving import wait_until_up
from tests.store.conftest import SLACK
from tests.store.test_redis_gatekeeper import ROOT
from tests.test_cli import PEPPER_TEXT, POLICY_YAML, Cli, clean_env, write_pepper

pytestmark = pytest.mark.anyio

REPLICA_PASSWORD = "replica-password-0123"
BLOCKS = {
    "pubsub": (),
    "publish_disabled": ("--rename-command", "PUBLISH", ""),
    # a user for the servers with every command and key but no pub/sub channel (Redis 7)
    "subscribe_denied": ("--user", "gk", "on", f">{REPLICA_PASSWORD}", "~*", "resetchannels",
                         "+@all"),
}
CACHE_TTL = {"pubsub": 30.0, "publish_disabled": 2.0, "subscribe_denied": 2.0}
"""With pub/sub, a TTL far longer than the second the push must take; blocked, a short one."""


@pytest.mark.parametrize("path", list(BLOCKS))
async def test_a_key_revoked_by_the_cli_is_refused_by_two_running_servers(
        tmp_path: Path, path: str) -> None:
    ttl = CACHE_TTL[path]
    pepper = write_pepper(tmp_path / "pepper")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY_YAML.format(pepper=pepper).replace(
        "cache_ttl: 1.0", f"cache_ttl: {ttl}"))
    with RedisNode(tmp_path / "redis", *BLOCKS[path]) as node:
        await anyio.to_thread.run_sync(node.start)
        cli = Cli(tmp_path, policy_file, node.url)
        # issued here (a CLI start spared), revoked by the CLI
        issuer = RedisStore(node.url, **SLACK)
        key, record = await key_admin.create_key(issuer, PEPPER_TEXT.encode(),
                                                 load_policy(policy_file), "globex", time.time())
        await issuer.close()
        url = node.url if path != "subscribe_denied" else \
            f"redis://gk:{REPLICA_PASSWORD}@127.0.0.1:{node.port}/0"
        ports = [free_port(), free_port()]
        replicas = [subprocess.Popen(
            [sys.executable, "-m", "tests.store.redis_replica", str(port), url,
             str(policy_file)], cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) for port in ports]
        try:
            bases = [f"http://127.0.0.1:{port}" for port in ports]
            for base, process in zip(bases, replicas, strict=True):
                await anyio.to_thread.run_sync(wait_until_up, base, process)
            async with httpx.AsyncClient(timeout=10) as client:
                async def status(base: str) -> int:
                    sent = await client.get(f"{base}/v1/models",
                                            headers={"authorization": f"Bearer {key}"})
                    return sent.status_code

                for base in bases:
                    assert await status(base) == 200
                subscribers = node.cli("pubsub", "numsub", "gk:keys:changed").split()
                refused: dict[str, float] = {}
                before: list[int] = []
                cli_started = anyio.Event()
                written: list[float] = []

                async def watch(base: str) -> None:
                    """Ask without pause until refused (no answer extends cache_ttl)."""
                    with anyio.fail_after(ttl + 60):
                        while True:
                            code = await status(base)
                            if not cli_started.is_set():
                                before.append(code)
                            elif code == 401:
                                refused[base] = time.monotonic()
                                return
                            await anyio.sleep(0.01)

                async def version() -> None:
                    """When the revoke landed: the version counter every write moves on."""
                    seen = await admin.keys_version()
                    with anyio.fail_after(60):
                        while await admin.keys_version() == seen:
                            await anyio.sleep(0.005)
                    written.append(time.monotonic())

                admin = RedisStore(node.url, **SLACK)
                try:
                    async with anyio.create_task_group() as tg:
                        for base in bases:
                            tg.start_soon(watch, base)
                        tg.start_soon(version)
                        await anyio.sleep(0.3)
                        cli_started.set()
                        revoke = await anyio.to_thread.run_sync(cli.keys, "revoke",
                                                                record.key_id)
                finally:
                    await admin.close()
        finally:
            for process in replicas:
                process.terminate()
            logs = [process.communicate(timeout=15)[1] for process in replicas]
    assert revoke.code == 0, revoke.err
    assert set(before) == {200}
    after = [refused[base] - written[0] for base in bases]
    print(f"\n{path} (cache_ttl {ttl} s): refused by both {max(after):.2f} s after the revoke "
          f"was written (each {', '.join(f'{a:.2f} s' for a in after)})")
    if path == "pubsub":
        assert subscribers[-1] == "2"  # both servers listen
        assert max(after) < 1.0  # pushed: far sooner than the 30 s cache_ttl
        assert "not published" not in revoke.err
        return
    # blocked: no server heard it, and the TTL path still held within keys.cache_ttl
    assert max(after) < ttl + 0.5
    if path == "publish_disabled":
        assert subscribers[-1] == "2"
        assert "written, but its change was not published" in revoke.err
    else:
        assert subscribers[-1] == "0"  # neither server could subscribe
        assert all("key change notifications lost" in log for log in logs), logs

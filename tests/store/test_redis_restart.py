"""A single Redis server restarted loses no key records with the persistence the README asks
for (``appendonly yes``, ``appendfsync everysec``): keys created and revoked, the server
killed with SIGKILL at once (no wait for the fsync second: an acknowledged write is already in
the kernel, which a killed process does not take with it) or shut down, started again on the
same directory, and the keys still verify (and the revoked one stays revoked). Redis's
default snapshots alone lose them in a kill: what ``check-config`` warns about."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from gatekeeper import Gatekeeper, key_admin, load_policy
from gatekeeper.principal import KeyStatus
from gatekeeper.store.redis import RedisStore
from tests.conftest import Recorder, asgi_request
from tests.redis_nodes import AOF, RDB_ONLY, RedisNode
from tests.store.conftest import SLACK
from tests.store.test_redis_gatekeeper import auth
from tests.test_cli import PEPPER_TEXT, POLICY_YAML, Cli, write_pepper

pytestmark = pytest.mark.anyio

CASES = {
    "aof-kill": (AOF, "kill", True),
    "aof-shutdown": (AOF, "shutdown", True),
    "rdb-kill": (RDB_ONLY, "kill", False),
    "rdb-shutdown": (RDB_ONLY, "shutdown", True),  # a clean shutdown saves a snapshot
}


@pytest.mark.parametrize("case", list(CASES))
async def test_key_records_survive_a_restart_with_the_persistence_the_readme_asks_for(
        tmp_path: Path, case: str) -> None:
    persistence, stop, kept = CASES[case]
    pepper = write_pepper(tmp_path / "pepper")
    node = RedisNode(tmp_path / "redis", persistence=persistence)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(f'store: "{node.url}"\n' + POLICY_YAML.format(pepper=pepper))
    policy = load_policy(policy_file)
    cli = Cli(tmp_path, policy_file, node.url)
    with node:
        await anyio.to_thread.run_sync(node.start)
        if case == "aof-kill":  # the CLI writes, as an operator would
            found = await anyio.to_thread.run_sync(cli.run, "check-config", str(policy_file))
            assert "AOF on" in found.out and "appendonly is off" not in found.err, found.text
            live, _ = await anyio.to_thread.run_sync(cli.create, "globex")
            dead, record = await anyio.to_thread.run_sync(cli.create, "globex")
            revoked = await anyio.to_thread.run_sync(cli.keys, "revoke", record["key_id"])
            assert revoked.code == 0, revoked.err
        else:  # the same writes (RedisStore's), in this process: faster
            store = RedisStore(node.url, **SLACK)
            live, _ = await key_admin.create_key(store, PEPPER_TEXT.encode(), policy, "globex",
                                                 time.time())
            dead, made = await key_admin.create_key(store, PEPPER_TEXT.encode(), policy,
                                                    "globex", time.time())
            await key_admin.set_status(store, made.key_id, KeyStatus.REVOKED, time.time())
            await store.close()
        if stop == "kill":
            node.kill()  # at once: no wait for appendfsync everysec's second
        else:
            assert node.cli("shutdown") == ""
            await anyio.to_thread.run_sync(node.process.wait, 10)  # type: ignore[union-attr]
        await anyio.to_thread.run_sync(node.start)
        store = RedisStore(node.url, **SLACK)
        gk = Gatekeeper(Recorder(), policy, store=store, pepper=PEPPER_TEXT.encode())
        try:
            records = await store.list_keys()
            codes = [(await asgi_request(gk, "/v1/models", auth(key)))[0]["status"]
                     for key in (live, dead)]
        finally:
            await store.close()
    if kept:
        assert sorted(r.status.value for r in records) == ["active", "revoked"]
        assert codes == [200, 401]
    else:
        assert records == []  # the snapshot every hour (or 5 min at 100 writes) never came
        assert codes == [401, 401]

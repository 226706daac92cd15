"""The Redis store behind real Gatekeeper instances: keys issued through one store reach
every instance, and two instances ("replicas") sharing one Redis count one limit, exactly,
with one EVALSHA per allowed request: a response's end (its slot released, its tokens
corrected) rides inside the next request's EVALSHA, or goes out from the store's timer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import anyio
import httpx
import pytest
from redis.asyncio import Redis

from gatekeeper import Gatekeeper, key_admin, load_policy, store_from_url
from gatekeeper.demo.upstream import create_upstream
from gatekeeper.policy.load import compile_policy
from gatekeeper.principal import KeyStatus
from gatekeeper.store.redis import RedisStore
from gatekeeper.types import Receive, Scope, Send
from tests.conftest import PEPPER, Recorder, asgi_request
from tests.redis_server import free_port, redis_server
from tests.store.conftest import empty_redis_store, slots_held
from tests.store.redis_replica import replicas
from tests.store.test_redis_store import calls
from tests.test_cli import PEPPER_TEXT, POLICY_YAML, Cli, write_pepper

ROOT = Path(__file__).parent.parent.parent

pytestmark = pytest.mark.anyio

POLICY = {"routes": {"protect": ["/v1/*"]},
          "keys": {"cache_ttl": 0.5},
          "tenants": {"acme": {"limits": {"requests": "50/hour", "tokens": "100000/minute",
                                          "concurrency": 60}}}}


def auth(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + key.encode())]


async def test_two_replicas_on_one_redis_allow_exactly_50_of_200(redis_port: int) -> None:
    policy = compile_policy(POLICY)
    started = anyio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await started.wait()  # hold every allowed request (and its slot) until all decided
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    stores = [await empty_redis_store(redis_port, server_time=True) for _ in range(2)]
    replicas = [Gatekeeper(slow, policy, store=s, counters=s, pepper=PEPPER) for s in stores]
    key, _ = await key_admin.create_key(stores[0], PEPPER, policy, "acme", time.time())
    codes: list[int] = []

    async def one(gk: Gatekeeper) -> None:
        codes.append(int((await asgi_request(gk, "/v1/models", auth(key)))[0]["status"]))

    try:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, replicas[i % 2])
            with anyio.fail_after(10):
                while len(codes) < 150:
                    await anyio.sleep(0.005)
            started.set()
        assert codes.count(200) == 50 and codes.count(429) == 150
    finally:
        for s in stores:
            await s.close()  # sends the settles still queued
    # every slot was given back at the end of its response
    assert await held_slots(redis_port) == 0


async def held_slots(port: int) -> int:
    """Slots held in the acme tenant's concurrency counter, read by a client of its own."""
    client = Redis(port=port)
    try:
        return await slots_held(client, "gk:{t:acme}:all:cc")
    finally:
        await client.aclose()


async def test_one_evalsha_per_allowed_request_the_release_riding_along(
        redis_port: int) -> None:
    policy = compile_policy(POLICY)
    store = await empty_redis_store(redis_port, server_time=True, settle_delay=1)
    gk = Gatekeeper(Recorder(), policy, store=store, counters=store, pepper=PEPPER)
    key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", time.time())
    try:
        await gk.startup()
        await anyio.sleep(0.2)  # its follower subscribes to key changes and forgets the cache once
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200
        await store.redis.config_resetstat()
        for _ in range(10):
            assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200
        # request, token and concurrency limits: one apply each, carrying the previous
        # response's release; the timer sent a release itself only if requests paused 1 s
        flushed = store._settles.sent
        assert await calls(store, "evalsha") == 10 + flushed and flushed <= 1
        # the two rate counters are read in one MGET inside each script; no key record was
        # read (GET)
        assert await calls(store, "mget") == 10
        assert await calls(store, "get") == 0
    finally:
        await gk.shutdown()
    assert await held_slots(redis_port) == 0  # the last release went out at shutdown


@pytest.mark.parametrize("limits", [
    {"requests": "1000/hour"},
    {"requests": "1000/hour", "tokens": "100000/day", "concurrency": 60},
    {"requests": "1000/hour", "tokens": "100000/day", "concurrency": 1}])
async def test_one_round_trip_per_chat_request_the_settle_riding_along(
        redis_port: int, limits: dict[str, object]) -> None:
    """Counted by the server (``INFO commandstats``): one EVALSHA per request, whatever its
    limits. A request limit alone has nothing to settle; with token and concurrency limits the
    end of a response (the slot given back, the tokens reserved corrected with the usage the
    upstream reported) rides inside the next request's EVALSHA, which settles it before it
    charges: with one slot, every request in a row passes."""
    policy = compile_policy({"routes": {"protect": ["/v1/*"]},
                             "tenants": {"acme": {"limits": limits}}})
    store = await empty_redis_store(redis_port, server_time=True, settle_delay=1)
    gk = Gatekeeper(create_upstream(), policy, store=store, counters=store, pepper=PEPPER)
    key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", time.time())
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 40,
                       "messages": [{"role": "user", "content": "one two three"}]}).encode()
    headers = [*auth(key), (b"content-type", b"application/json")]

    async def chat() -> dict[bytes, bytes]:
        sent = await asgi_request(gk, "/v1/chat/completions", headers, method="POST",
                                  body=body)
        assert sent[0]["status"] == 200
        assert b'"usage"' in b"".join(m.get("body", b"") for m in sent[1:])
        return dict(sent[0]["headers"])

    try:
        await gk.startup()
        await anyio.sleep(0.2)  # its follower subscribes to key changes and forgets the cache once
        first = await chat()
        await store.redis.config_resetstat()
        for _ in range(10):
            await chat()
        flushed = store._settles.sent  # only if the requests paused for a second
        assert await calls(store, "evalsha") == 10 + flushed and flushed <= 1
        if "tokens" in limits:
            # each reservation was corrected: the demo upstream uses far less than estimated
            estimate = 100_000 - int(first[b"x-ratelimit-remaining-tokens"])
            last = int((await chat())[b"x-ratelimit-remaining-tokens"])
            assert 100_000 - last < estimate + 11 * (estimate // 2)  # not 12 * estimate
    finally:
        await gk.shutdown()
    # every slot was given back at the end of its response
    assert await held_slots(redis_port) == 0


async def test_a_key_revoked_through_one_store_is_refused_by_the_other_replica(
        redis_port: int) -> None:
    policy = compile_policy(POLICY)
    cli, server = (await empty_redis_store(redis_port), await empty_redis_store(redis_port))
    gk = Gatekeeper(Recorder(), policy, store=server, counters=server, pepper=PEPPER)
    key, record = await key_admin.create_key(cli, PEPPER, policy, "acme", time.time())
    try:
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200
        await key_admin.set_status(cli, record.key_id, KeyStatus.REVOKED, time.time())
        with anyio.fail_after(3):  # within keys.cache_ttl (0.5 s) of the revoke
            while (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200:
                await anyio.sleep(0.05)
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 401
    finally:
        await cli.close()
        await server.close()


async def test_the_cli_manages_keys_in_redis_that_a_server_reads(redis_port: int,
                                                                tmp_path: Path) -> None:
    """``gatekeeper keys ... --store redis://`` as a real subprocess; a server in this
    process authenticates what it created and refuses what it revoked."""
    await (await empty_redis_store(redis_port)).close()
    pepper = write_pepper(tmp_path / "pepper")
    (tmp_path / "policy.yaml").write_text(POLICY_YAML.format(pepper=pepper))
    cli = Cli(tmp_path, tmp_path / "policy.yaml", f"redis://127.0.0.1:{redis_port}/0")
    key, record = cli.create("globex")
    assert [r["key_id"] for r in cli.keys("list", as_json=True).json()] == [record["key_id"]]
    server = store_from_url(cli.store_url, create=False)
    gk = Gatekeeper(Recorder(), load_policy(cli.policy), store=server,
                    pepper=PEPPER_TEXT.encode())
    try:
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200
        assert cli.keys("revoke", record["key_id"]).code == 0
        with anyio.fail_after(3):  # within the policy's keys.cache_ttl (1 s)
            while (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200:
                await anyio.sleep(0.05)
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 401
        assert cli.keys("list", "--json").json()[0]["status"] == "revoked"
    finally:
        await server.close()


@pytest.mark.parametrize("where", ["redis_port", "redis_cluster_url", "nothing"])
def test_check_config_says_what_the_redis_store_is(request: pytest.FixtureRequest,
                                                    tmp_path: Path, where: str) -> None:
    if where == "nothing":
        url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    else:
        found = request.getfixturevalue(where)
        url = f"redis://127.0.0.1:{found}/0" if where == "redis_port" else found
    pepper = write_pepper(tmp_path / "pepper")
    (tmp_path / "policy.yaml").write_text(
        f'store: "{url}"\n' + POLICY_YAML.format(pepper=pepper))
    result = Cli(tmp_path, tmp_path / "policy.yaml", url).run(
        "check-config", str(tmp_path / "policy.yaml"))
    assert result.code == 0 and "Traceback" not in result.text  # warnings only
    if where == "nothing":
        assert "warning: store describe failed" in result.err
        assert "hunter2" not in result.text
        return
    kind = "one server" if where == "redis_port" else "cluster of 3 primaries"
    assert "store answers: Redis " in result.out and kind in result.out
    assert "warning: store: appendonly is off" in result.err  # the tests' servers persist nothing


async def test_redis_down_refuses_503_without_reaching_the_app_then_recovers() -> None:
    """fail_closed end to end: while Redis is down every request is a quick 503 and none
    reaches the app; when it is back (empty: the key is issued again) requests pass again."""
    policy = compile_policy(POLICY)
    app = Recorder()
    with redis_server() as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        gk = Gatekeeper(app, policy, store=store, counters=store, pepper=PEPPER)
        key, record = await key_admin.create_key(store, PEPPER, policy, "acme", time.time())
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200
    try:
        for _ in range(5):
            started = time.monotonic()
            sent = await asgi_request(gk, "/v1/models", auth(key))
            assert sent[0]["status"] == 503
            assert b"store_unavailable" in sent[-1]["body"]
            assert time.monotonic() - started < 0.5
        assert app.paths == ["/v1/models"]  # only the request made while Redis was up
        with redis_server(port=port):
            await store.create_key(record)  # a real restart would have kept it (AOF)
            with anyio.fail_after(3):
                while (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] != 200:
                    await anyio.sleep(0.05)
    finally:
        await store.close()


@pytest.mark.parametrize("where", ["redis_port", "redis_cluster_url"])
async def test_two_replica_processes_on_one_redis_allow_exactly_50_of_200(
        request: pytest.FixtureRequest, tmp_path: Path, where: str) -> None:
    """Two uvicorn processes, one Redis (or one three-primary Cluster): 200 concurrent requests
    through both, a limit of 50 per hour on the key, exactly 50 pass (each process counting
    alone would pass 100)."""
    found = request.getfixturevalue(where)
    url = f"redis://127.0.0.1:{found}/0" if where == "redis_port" else found
    await (await empty_redis_store(found)).close()
    pepper = write_pepper(tmp_path / "pepper")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY_YAML.format(pepper=pepper).replace(
        "  globex: {}\n", "  globex:\n    limits:\n      requests: 50/hour\n"))
    key, _ = Cli(tmp_path, policy_file, url).create("globex")
    async with replicas(2, url, policy_file) as bases:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            replies = await asyncio.gather(*(
                client.get(f"{bases[i % 2]}/v1/models", headers={"authorization": f"Bearer {key}"})
                for i in range(200)))
        codes = [r.status_code for r in replies]
        assert codes.count(200) == 50 and codes.count(429) == 150, sorted(set(codes))


async def test_fail_closed_opens_the_breaker_so_an_outage_costs_no_timeout_per_request() -> None:
    policy = compile_policy(POLICY)
    app = Recorder()
    with redis_server() as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        gk = Gatekeeper(app, policy, store=store, pepper=PEPPER)
        key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", time.time())
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200
    try:
        started = time.monotonic()
        for _ in range(200):
            assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 503
        assert time.monotonic() - started < 2.0
        # the key store's breaker when the cached key had expired (cache_ttl 0.5 s), else the
        # counter store's: either way calls stopped reaching the dead server
        assert gk.breaker.open or gk.runtime.counters.breaker.open  # type: ignore[attr-defined]
        assert app.paths == ["/v1/models"]
        assert gk.metrics.registry.get_sample_value("gatekeeper_store_fail_open") == 0
    finally:
        await store.close()


async def test_fail_open_keeps_limiting_in_process_with_known_keys_then_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis dies: a key verified before keeps working and its limit (3 an hour) keeps
    holding, counted in this process; a key never seen is refused 503; the switch is logged
    and shown in a metric; when Redis is back the store counts again."""
    policy = compile_policy({"routes": {"protect": ["/v1/*"]}, "keys": {"cache_ttl": 0.2},
                             "on_store_error": "fail_open",
                             "tenants": {"acme": {"limits": {"requests": "3/hour"}}}})
    app = Recorder()
    sample = None
    with redis_server() as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        gk = Gatekeeper(app, policy, store=store, pepper=PEPPER)
        sample = gk.metrics.registry.get_sample_value
        key, record = await key_admin.create_key(store, PEPPER, policy, "acme", time.time())
        stranger, stranger_record = await key_admin.create_key(store, PEPPER, policy, "acme",
                                                               time.time())
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200
    try:
        await anyio.sleep(0.3)  # the cached verification is past cache_ttl: the store is asked
        with caplog.at_level(logging.ERROR, logger="gatekeeper"):
            codes = [(await asgi_request(gk, "/v1/models", auth(key)))[0]["status"]
                     for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]  # the local count holds the limit
        assert "fail_open" in caplog.text
        assert sample("gatekeeper_store_fail_open") == 1
        assert (await asgi_request(gk, "/v1/models", auth(stranger)))[0]["status"] == 503
        with redis_server(port=port):
            for rec in (record, stranger_record):
                await store.create_key(rec)  # a real restart would have kept them (AOF)
            passed = 0
            with anyio.fail_after(20):  # the counter breaker lets a trial through, then closes
                while sample("gatekeeper_store_fail_open") != 0:
                    sent = await asgi_request(gk, "/v1/models", auth(stranger))
                    passed += sent[0]["status"] == 200
                    await anyio.sleep(0.05)
            assert passed >= 1
            # back on the store, which restarted empty (counters may be lost, records may
            # not): the key's limit holds again, counted there
            codes = [(await asgi_request(gk, "/v1/models", auth(key)))[0]["status"]
                     for _ in range(4)]
            assert codes == [200, 200, 200, 429]
        assert len(app.paths) == 1 + 3 + passed + 3
    finally:
        await store.close()

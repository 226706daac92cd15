"""The Redis rows: gatekeeper's limits on a real Redis beside slowapi on Redis and one bare
EVALSHA round trip, measured interleaved in one run, with round trips counted by the server.

    python benchmarks/redis_path.py [--quick] [--rounds N] [--requests N] [--output PATH]
    python benchmarks/redis_path.py --instructions [--counts N1,N2] [--scenarios A,B]

Starts its own ``redis-server`` on a free loopback port (no persistence; never the one on
6379), drives each scenario in process with the hand-written ASGI driver (``driver.py``), and
writes the ``redis`` section of ``benchmarks/RESULTS.md``. Without ``redis-server`` it says so
and exits 0. ``--instructions`` also counts the client's instructions per request under
cachegrind (each scenario alone in a child, slope between two request counts; the server is
not counted), as multiples of one bare EVALSHA's, in the same section.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis
from slowapi import Limiter
from slowapi.util import get_remote_address

import gatekeeper
from benchmarks import results
from benchmarks.apps import (
    CHAT_PATH,
    CLIENT,
    HIGH,
    LIMITS_LEASE,
    LIMITS_RTC,
    PEPPER,
    SLOWAPI_LIMIT,
    Calls,
    make_app,
    make_scope,
)
from benchmarks.driver import CheckFailed, probe, timed
from benchmarks.scenarios import benchmark_policy, credential_for
from gatekeeper.store.redis import RedisStore

Batch = Callable[[int], Awaitable[int]]
"""Runs n requests (or calls), returns nanoseconds."""


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", directory],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise CheckFailed("redis-server did not start") from None
            time.sleep(0.02)


async def _round_trips(url: str, batch: Batch, n: int) -> float:
    """Commands clients sent per request, seen by the server (``MONITOR``; the commands a Lua
    script runs inside the server are marked ``lua`` and do not count)."""
    watcher = aioredis.Redis.from_url(url)
    seen: list[str] = []
    async with watcher.monitor() as monitor:
        async def listen() -> None:
            while True:
                info = await monitor.next_command()
                if info["client_type"] != "lua":
                    seen.append(str(info["command"]).split(" ", 1)[0].upper())

        task = asyncio.get_running_loop().create_task(listen())
        await asyncio.sleep(0.1)
        await batch(n)
        await asyncio.sleep(0.3)  # let the last commands arrive
        task.cancel()
    await watcher.aclose()
    return len(seen) / n


SCRIPT_CALLS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_evalsha_ro", "cmdstat_eval_ro",
                "cmdstat_fcall", "cmdstat_fcall_ro")


async def _server_us(url: str, batch: Batch, n: int) -> float:
    """Microseconds the server spent per request running the commands clients sent (``INFO
    commandstats``). A script's time includes the commands it runs, which the server also
    counts under their own names: when scripts ran, only the scripts' time is summed."""
    admin = aioredis.Redis.from_url(url)
    try:
        await admin.config_resetstat()
        await batch(n)
        stats = await admin.info("commandstats")
    finally:
        await admin.aclose()
    ran = {k: float(v["usec"]) for k, v in stats.items()
           if k not in ("cmdstat_config|resetstat", "cmdstat_info")}
    scripts = [usec for k, usec in ran.items() if k in SCRIPT_CALLS]
    return sum(scripts or ran.values()) / n


async def _scenarios(url: str, only: str | None = None, store_options: str = ""
                     ) -> dict[str, tuple[Batch, Callable[[], Awaitable[None]] | None]]:
    """name -> (a timed batch, a checked probe); ``only``: that one scenario alone;
    ``store_options``: added to gatekeeper's store URL."""
    client = aioredis.Redis.from_url(url)
    sha = await client.script_load("return 1")

    async def evalsha(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            await client.evalsha(sha, 0)
        return time.perf_counter_ns() - start

    out: dict[str, tuple[Batch, Callable[[], Awaitable[None]] | None]] = {
        "evalsha": (evalsha, None)}

    def asgi(app: Any, scope: dict[str, Any], status: int = 200) -> tuple[Batch, Any]:
        async def batch(n: int) -> int:
            return await timed(app, scope, n)

        async def check() -> None:
            got, body = await probe(app, scope)
            if got != status:
                raise CheckFailed(f"status {got}: {body[:200]!r}")
        return batch, check

    out["bare"] = asgi(make_app(Calls()), make_scope("POST", CHAT_PATH, CLIENT, None))
    if only in (None, "slowapi-redis"):
        limiter = Limiter(key_func=get_remote_address, storage_uri=url)
        out["slowapi-redis"] = asgi(make_app(Calls(), limiter, SLOWAPI_LIMIT),
                                    make_scope("POST", CHAT_PATH, CLIENT, None))
    for name, limits in (("gk-one-limit-redis", {"requests": HIGH}),
                         ("gk-limits-redis", LIMITS_RTC),
                         ("gk-limits-lease", LIMITS_LEASE)):
        if only not in (None, name):
            continue
        policy = benchmark_policy(limits)
        store = RedisStore(url + store_options)
        gk = gatekeeper.Gatekeeper(make_app(Calls()), policy, store=store, pepper=PEPPER)
        await gk.startup()
        token = await credential_for("key", store, policy, time.time())  # type: ignore[arg-type]
        out[name] = asgi(gk, make_scope("POST", CHAT_PATH, CLIENT, token))
    return out


WHAT = {
    "evalsha": "one bare EVALSHA round trip (`return 1`), redis-py asyncio",
    "bare": "bare Starlette app, POST /v1/chat/completions",
    "slowapi-redis": f"slowapi, one limit ({SLOWAPI_LIMIT}) stored in Redis",
    "gk-one-limit-redis": "gatekeeper, one per-key request limit in Redis (strict)",
    "gk-limits-redis": "gatekeeper, request + token + concurrency limits in Redis (strict)",
    "gk-limits-lease": "the same limits in lease mode: slices of 100 requests and 200000 "
                       "tokens per replica, concurrency counted per replica",
}


async def run(rounds: int, requests: int) -> str:
    with tempfile.TemporaryDirectory(prefix="gk-bench-redis-") as directory:
        proc, port = start_redis(directory)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            scenarios = await _scenarios(url)
            trips: dict[str, float] = {}
            server: dict[str, float] = {}
            for name, (batch, check) in scenarios.items():
                if check is not None:
                    await check()
                await batch(min(requests, 200))  # warm-up (scripts, caches, connections)
                trips[name] = await _round_trips(url, batch, 200)
                server[name] = await _server_us(url, batch, min(requests, 1000))
            us: dict[str, list[float]] = {name: [] for name in scenarios}
            names = list(scenarios)
            for r in range(rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    gc.collect()
                    us[name].append(await scenarios[name][0](requests) / requests / 1000)
            return _report(us, trips, server, rounds, requests)
        finally:
            proc.terminate()
            proc.wait(5)


def _report(us: dict[str, list[float]], trips: dict[str, float], server: dict[str, float],
            rounds: int, requests: int) -> str:
    med = {name: statistics.median(v) for name, v in us.items()}
    added = {name: statistics.median(a - b for a, b in zip(us[name], us["bare"], strict=True))
             for name in us if name not in ("bare", "evalsha")}
    lines = ["## Redis: limits on a real redis-server, beside slowapi and one bare EVALSHA", "",
             f"`python benchmarks/redis_path.py`: {rounds} rounds of {requests} requests per "
             "scenario, interleaved (the first rotating); a `redis-server` started on a free "
             "loopback port, no persistence. **added** is the median of per-round differences "
             "to the bare app; round trips are the commands clients sent per request, seen by "
             "the server (`MONITOR`, a script's own commands not counted), over 200 requests; "
             "**server us** is what the server spent running them per request (`INFO "
             "commandstats`: a script's time, which includes the commands it runs).",
             "",
             "| scenario | what | median us/request | added vs bare (us) | x one EVALSHA | "
             "server us/request | round trips/request |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in us:
        extra = "-" if name not in added else f"+{added[name]:.1f}"
        ratio = "-" if name not in added else f"{added[name] / med['evalsha']:.2f}"
        lines.append(f"| {name} | {WHAT[name]} | {med[name]:.1f} | {extra} | {ratio} | "
                     f"{server[name]:.1f} | {trips[name]:.2f} |")
    lines += ["", "Issue #16's bar: gatekeeper's added cost at most 1.3x one bare EVALSHA round "
              "trip; one round trip per allowed request. The end of a response with a "
              "concurrency slot or a token reservation to settle rides inside the next "
              "request's `apply.lua` call; what no request carries within `settle_delay` (10 ms) "
              "is one `settle.lua` call of its own, counted above. Issue #18's bar "
              "for lease mode: at most 0.05 round trips per request in steady state.", "",
              "Machine:", "",
              *results.machine()]
    return "\n".join(lines)


INSTRUCTIONS = ("evalsha", "bare", "slowapi-redis", "gk-one-limit-redis", "gk-limits-redis")


async def _child(url: str, name: str, n: int) -> None:
    """One scenario alone, checked, warmed up, then ``n`` requests (under cachegrind)."""
    # a settle waits up to 1 s for the next request to carry it, as it does for 10 ms at full
    # speed: under cachegrind a request takes milliseconds
    batch, check = (await _scenarios(url, name, "?settle_delay=1"))[name]
    if check is not None:
        await check()
    await batch(200)
    await batch(n)
    await asyncio.sleep(1.1)  # the store's settle timer fires once, at either count alike


def instructions(counts: tuple[int, ...], names: Sequence[str] = INSTRUCTIONS) -> str:
    """Client instructions per request of each scenario, and gatekeeper's added over bare as
    a multiple of one bare EVALSHA's."""
    from benchmarks.instructions import child_env, run_child

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return "SKIPPED: valgrind is not installed"
    with tempfile.TemporaryDirectory(prefix="gk-bench-redis-") as directory:
        proc, port = start_redis(directory)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            per: dict[str, float] = {}
            for name in dict.fromkeys(("evalsha", "bare", *names)):
                irefs = [run_child([__file__, "--child", name, "--url", url, "--requests",
                                    str(n)], child_env(), valgrind)[0] for n in counts]
                per[name] = (irefs[-1] - irefs[0]) / (counts[-1] - counts[0])
        finally:
            proc.terminate()
            proc.wait(5)
    lines = ["| scenario | client instructions/request | added vs bare | x one EVALSHA |",
             "| --- | ---: | ---: | ---: |"]
    for name, value in per.items():
        added = value - per["bare"]
        shown = ("-", "-") if name in ("evalsha", "bare") else \
            (f"{added:,.0f}", f"{added / per['evalsha']:.2f}")
        lines.append(f"| {name} | {value:,.0f} | {shown[0]} | {shown[1]} |")
    return "\n".join(lines)


def _with_instructions(text: str, counts: tuple[int, ...], names: Sequence[str]) -> str:
    """The report with the client's instructions inserted before its machine lines."""
    table = instructions(counts, names)
    head, mark, tail = text.partition("\nMachine:")
    return (f"{head.rstrip()}\n\nThe client's own work, counted by cachegrind (`--instructions`"
            f": each scenario alone in a child under `valgrind --tool=cachegrind`, slope between "
            f"{counts[0]} and {counts[-1]} requests; the server is not counted):\n\n{table}\n"
            f"{mark}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--counts", default="500,1500")
    parser.add_argument("--scenarios", default=",".join(INSTRUCTIONS),
                        help="with --instructions: which (evalsha and bare always)")
    parser.add_argument("--child", choices=INSTRUCTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=results.DEFAULT_PATH)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args.url, args.child, args.requests))
        return 0
    rounds, requests = (2, 100) if args.quick else (args.rounds, args.requests)
    try:
        text = asyncio.run(run(rounds, requests))
        if args.instructions:
            text = _with_instructions(text, tuple(int(c) for c in args.counts.split(",")),
                                      args.scenarios.split(","))
    except FileNotFoundError:
        print("SKIPPED: redis-server is not installed (apt-get install redis-server)")
        return 0
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    print(text)
    if not args.quick:
        results.update(args.output, "redis", text)
        print(f"written to {args.output} (section redis)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

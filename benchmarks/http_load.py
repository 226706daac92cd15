"""What each setup costs over HTTP: uvicorn (uvloop, httptools) serving each variant in its
own process, driven by wrk on loopback.

    python benchmarks/http_load.py [--quick] [--rounds N] [--seconds S] [--warmup S]
                                   [--connections 1,16] [--no-install] [--output PATH]

Variants (``http_variants.py``): the bare Starlette app, a do-nothing middleware, slowapi with
one in-memory limit, and gatekeeper (foundation; with request, token and concurrency limits;
with limits and a country rule; with the limits in Redis, strict and in lease mode, on a
``redis-server`` the harness starts on a free loopback port, skipped without one). All
servers start at once (``http_server.py``) and each is
checked (200 with the chat reply; gatekeeper refuses a malformed key with 401) before and after
timing. Every round runs, for each connection count, each variant in turn (the first one
rotating): a warm-up run, then a timed run, reading the server's CPU time before and after it.
Without wrk (and without root to ``apt-get install`` it) the script says so and exits 0.
Without ``--quick`` the http section of ``benchmarks/RESULTS.md`` (or ``--output``) is
rewritten; the other sections are left alone.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import results
from benchmarks.apps import CHAT_BODY, CHAT_PATH
from benchmarks.driver import CheckFailed, rotation
from benchmarks.http_measure import Series, timed_run, wire_headers
from benchmarks.http_report import http_section
from benchmarks.http_server import Server
from benchmarks.http_variants import REDIS_URL_ENV, VARIANTS, Variant
from benchmarks.redis_path import start_redis
from benchmarks.scenarios import GARBAGE_KEY
from benchmarks.wrk import WrkFailed, WrkUnavailable, find_wrk, wrk_version

DEFAULT_ROUNDS, DEFAULT_SECONDS, DEFAULT_WARMUP = 5, 5, 1
QUICK_ROUNDS, QUICK_SECONDS, QUICK_WARMUP = 1, 1, 0
DEFAULT_CONNECTIONS = (1, 16)


def probe(port: int, authorization: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", CHAT_PATH, body=CHAT_BODY,
                           headers=dict(wire_headers(authorization)))
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()
    finally:
        connection.close()


def check(variant: Variant, server: Server, when: str) -> None:
    try:
        _check(variant, server, when)
    except (OSError, http.client.HTTPException) as exc:
        raise CheckFailed(f"{variant.name} ({when}): {exc!r}\n{server.log_tail()}") from None


def _check(variant: Variant, server: Server, when: str) -> None:
    status, headers, body = probe(server.port, server.authorization)
    if status != 200 or b'"chatcmpl-bench"' not in body:
        raise CheckFailed(f"{variant.name} ({when}): status {status}: {body[:200]!r}\n"
                          f"{server.log_tail()}")
    if variant.limits is not None and "x-ratelimit-limit-requests" not in headers:
        raise CheckFailed(f"{variant.name} ({when}): no x-ratelimit headers: {headers}")
    if variant.gatekeeper:
        status, _, body = probe(server.port, GARBAGE_KEY)
        if status != 401 or b'"code":"credential_malformed"' not in body:
            raise CheckFailed(f"{variant.name} ({when}): a malformed key got {status}: "
                              f"{body[:200]!r}")


def run(wrk: str, rounds: int, seconds: int, warmup: int, connections: tuple[int, ...],
        progress: bool) -> tuple[dict[tuple[str, int], Series], list[str]]:
    with tempfile.TemporaryDirectory(prefix="gk-bench-http-redis-") as directory:
        try:
            redis, port = start_redis(directory)
        except FileNotFoundError:
            variants = [v for v in VARIANTS if not v.redis]
            measured, notes = _run(variants, wrk, rounds, seconds, warmup, connections,
                                   progress)
            return measured, [*notes, "the Redis variants were skipped: redis-server is not "
                              "installed (apt-get install redis-server)"]
        os.environ[REDIS_URL_ENV] = f"redis://127.0.0.1:{port}/0"  # the servers inherit it
        try:
            return _run(list(VARIANTS), wrk, rounds, seconds, warmup, connections, progress)
        finally:
            redis.terminate()
            redis.wait(5)


def _run(variants: list[Variant], wrk: str, rounds: int, seconds: int, warmup: int,
         connections: tuple[int, ...],
         progress: bool) -> tuple[dict[tuple[str, int], Series], list[str]]:
    servers = [Server(v.name) for v in variants]
    try:
        for v, s in zip(variants, servers, strict=True):
            s.ready()
            check(v, s, "before timing")
        measured = {(v.name, c): Series() for v in variants for c in connections}
        pairs = list(zip(variants, servers, strict=True))
        for r in range(rounds):
            for c in connections:
                for v, s in rotation(pairs, r):
                    timed_run(wrk, s, c, seconds, warmup, measured[(v.name, c)])
            if progress:
                print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        notes = []
        for v, s in pairs:
            check(v, s, "after timing")
            total = sum(measured[(v.name, c)].requests for c in connections)
            notes.append(f"{v.name}: 200 with the chat reply before and after timing"
                         + ("; a malformed key refused with 401 credential_malformed"
                            if v.gatekeeper else "")
                         + ("; x-ratelimit headers present" if v.limits is not None else "")
                         + f"; {total:,} timed requests, no wrk error (connect, read, write, "
                           "status >= 400, timeout)")
        return measured, notes
    finally:
        for s in servers:
            s.stop()


def parse_connections(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--connections: {text!r} is not a comma-separated "
                                         "list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--connections: {text!r}: each must be at least 1")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROUNDS} round of {QUICK_SECONDS} s runs, no warm-up; "
                             "print only (unless --output)")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--seconds", type=int,
                        help=f"seconds per timed run (default {DEFAULT_SECONDS})")
    parser.add_argument("--warmup", type=int,
                        help=f"seconds of warm-up before each timed run (default "
                             f"{DEFAULT_WARMUP}; 0: none)")
    parser.add_argument("--connections", type=parse_connections,
                        default=DEFAULT_CONNECTIONS, help="comma-separated connection counts "
                        "(default 1,16)")
    parser.add_argument("--no-install", action="store_true",
                        help="never try apt-get install wrk")
    parser.add_argument("--output", type=Path,
                        help=f"the results file whose http section is rewritten (default "
                             f"{results.DEFAULT_PATH}; none with --quick)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    warmup = args.warmup if args.warmup is not None else (
        QUICK_WARMUP if args.quick else DEFAULT_WARMUP)
    if rounds < 1 or seconds < 1 or warmup < 0:
        parser.error("--rounds and --seconds must be at least 1, --warmup at least 0")
    output = args.output if args.output is not None else (
        None if args.quick else results.DEFAULT_PATH)

    try:
        wrk, found = find_wrk(install=not args.no_install)
    except WrkUnavailable as exc:
        print(f"SKIPPED: {exc}")
        return 0
    print(found, flush=True)
    try:
        measured, notes = run(wrk, rounds, seconds, warmup, args.connections,
                              progress=not args.quick)
    except (CheckFailed, WrkFailed) as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    command = "python benchmarks/http_load.py" + (" --quick" if args.quick else "")
    if args.rounds or args.seconds or args.warmup is not None:
        command += f" --rounds {rounds} --seconds {seconds} --warmup {warmup}"
    if args.connections != DEFAULT_CONNECTIONS:
        command += " --connections " + ",".join(map(str, args.connections))
    text = http_section(measured, notes, rounds, seconds, warmup, args.connections, command,
                        [found, f"load tool: {wrk_version(wrk)}"])
    print(text)
    if output is not None:
        results.update(output, "http", text)
        print(f"written to {output} (section http)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

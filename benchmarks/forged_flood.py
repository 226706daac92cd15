"""What one forged-key request costs once a flood of forged keys has filled the caches.

    python benchmarks/forged_flood.py [--keys N] [--rounds R] [--batch M]

A forged key has a valid checksum (a CRC is easy to compute) and an id the store does not
hold: it passes the format check, costs one store lookup and is remembered in the refused-key
cache. Each setup is sent ``--batch`` new distinct forged keys on an empty cache, then flooded
with ``--keys`` more, then sent ``--rounds`` batches of new ones, timed. Setups: the whole
``gatekeeper.Gatekeeper`` (memory store, hand-written ASGI driver, no sockets) and the
``Authenticator`` alone, each with ``keys.cache_ttl`` at its default (1 s) and at its maximum
(60 s, so the refused-key cache stays full and every new key evicts one). Microseconds per
forged request, median over the rounds. Run it against another checkout with
``PYTHONPATH=/path/to/checkout``; the first line printed says which gatekeeper was imported.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import gatekeeper
from gatekeeper.credentials import Credential
from gatekeeper.principal import CredentialKind

Message = MutableMapping[str, Any]

PEPPER = b"benchmark-pepper-0123456789-abcdefghijklmnop"
CLIENT = ("192.0.2.10", 40000)
UNKNOWN = b'"code":"key_unknown"'


def policy(cache_ttl: float) -> dict[str, Any]:
    return {"routes": {"protect": ["/v1/*"]}, "keys": {"cache_ttl": cache_ttl},
            "tenants": {"acme": {"allowed_networks": ["192.0.2.0/24"]}}}


def forged_keys() -> Iterator[str]:
    """Distinct well-formed keys with valid checksums, none of them in the store."""
    for i in itertools.count():
        yield gatekeeper.build_key(f"Zz{i:010d}", "f" * 32)


def scope_for(token: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/v1/models", "raw_path": b"/v1/models", "root_path": "",
        "query_string": b"", "client": CLIENT, "server": ("api.bench.example", 80),
        "headers": [(b"host", b"api.bench.example"), (b"x-api-key", token.encode())],
    }


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Sink:
    """A ``send`` that keeps the last status and body, to check every answer is key_unknown."""

    def __init__(self) -> None:
        self.status, self.body = 0, b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body = message.get("body", b"")


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise SystemExit("the app was called for a forged key")


Request = Callable[[Any], Awaitable[None]]
"""Sends one forged request, given what was prepared for it outside the timing; checks it."""


def through_gatekeeper(cache_ttl: float) -> tuple[Request, Callable[[str], Any]]:
    gk = gatekeeper.Gatekeeper(never_called, policy(cache_ttl), store=gatekeeper.MemoryStore(),
                               pepper=PEPPER)
    sink = Sink()

    async def request(scope: Any) -> None:
        await gk(scope, receive, sink)
        if sink.status != 401 or UNKNOWN not in sink.body:
            raise SystemExit(f"gatekeeper answered {sink.status} {sink.body[:120]!r}")

    return request, scope_for


def authenticator_alone(cache_ttl: float) -> tuple[Request, Callable[[str], Any]]:
    auth = gatekeeper.Authenticator(gatekeeper.MemoryStore(), PEPPER, cache_ttl=cache_ttl)

    async def request(credential: Any) -> None:
        result = await auth.authenticate(credential, time.time())
        if not isinstance(result, gatekeeper.Refusal) or result.reason.code != "key_unknown":
            raise SystemExit(f"Authenticator answered {result!r}")

    def prepare(token: str) -> Credential:
        return Credential(CredentialKind.API_KEY, token, "x-api-key")

    return request, prepare


SETUPS = [
    ("Gatekeeper, keys.cache_ttl 1 s (default)", through_gatekeeper, 1.0),
    ("Gatekeeper, keys.cache_ttl 60 s (cache stays full)", through_gatekeeper, 60.0),
    ("Authenticator alone, cache_ttl 1 s", authenticator_alone, 1.0),
    ("Authenticator alone, cache_ttl 60 s", authenticator_alone, 60.0),
]


async def timed(request: Request, prepared: list[Any]) -> float:
    """Microseconds per request over one batch, everything prepared beforehand."""
    gc.collect()
    start = time.perf_counter_ns()
    for item in prepared:
        await request(item)
    return (time.perf_counter_ns() - start) / len(prepared) / 1000


async def measure(make: Callable[[float], tuple[Request, Callable[[str], Any]]],
                  cache_ttl: float, flood: int, rounds: int, batch: int,
                  ) -> tuple[float, float, float, float]:
    """(us on an empty cache, then after ``flood`` more keys: median, min, max)."""
    request, prepare = make(cache_ttl)
    keys = forged_keys()
    empty = await timed(request, [prepare(next(keys)) for _ in range(batch)])
    for _ in range(flood):
        await request(prepare(next(keys)))
    us = [await timed(request, [prepare(next(keys)) for _ in range(batch)])
          for _ in range(rounds)]
    return empty, statistics.median(us), min(us), max(us)


def machine() -> list[str]:
    return [f"- python: {platform.python_version()} ({platform.python_implementation()})",
            f"- platform: {platform.platform()} ({platform.machine()})",
            f"- cpu count: {os.cpu_count()}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000, help="flood size (default 200000)")
    parser.add_argument("--rounds", type=int, default=7, help="timed batches (default 7)")
    parser.add_argument("--batch", type=int, default=2000, help="keys per batch (default 2000)")
    args = parser.parse_args(argv)
    if args.keys < 0 or args.rounds < 1 or args.batch < 1:
        parser.error("--keys must be >= 0, --rounds and --batch >= 1")
    logging.getLogger("gatekeeper.audit").setLevel(logging.WARNING)  # refusals print nothing
    print(f"gatekeeper imported from {os.path.dirname(gatekeeper.__file__)}", flush=True)
    print(f"\n{args.rounds} batches of {args.batch} new forged keys after {args.keys} others; "
          "us per forged request\n")
    print(f"| setup | empty cache | after {args.keys} keys (median) | min | max |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, make, ttl in SETUPS:
        empty, med, low, high = asyncio.run(measure(make, ttl, args.keys, args.rounds,
                                                    args.batch))
        print(f"| {name} | {empty:.1f} | {med:.1f} | {low:.1f} | {high:.1f} |", flush=True)
    print("", *machine(), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

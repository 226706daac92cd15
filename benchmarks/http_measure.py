"""One timed wrk run against one server, and what it adds to its variant's series: requests/s,
p50 and p99 latency, and the server's CPU time per request (user + system, from /proc, read
just before and just after the run, so the warm-up and the idle time between runs are out)."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.apps import CHAT_BODY, make_headers
from benchmarks.driver import CheckFailed
from benchmarks.http_server import Server
from benchmarks.wrk import run_wrk


@dataclass
class Series:
    """One variant at one connection count: one value per round."""

    rps: list[float] = field(default_factory=list)
    p50_us: list[float] = field(default_factory=list)
    p99_us: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    """The server's user + system CPU time per request; empty where /proc is missing."""
    requests: int = 0


def wire_headers(authorization: str) -> list[tuple[str, str]]:
    """The in-process request's headers, less the two the client computes (host, length)."""
    return [(k.decode(), v.decode()) for k, v in make_headers(authorization)
            if k not in (b"host", b"content-length")]


def timed_run(wrk: str, server: Server, connections: int, seconds: int, warmup: int,
              series: Series) -> None:
    headers = wire_headers(server.authorization)
    if warmup:
        run_wrk(wrk, server.port, connections, warmup, headers, CHAT_BODY)
    before = server.cpu_seconds()
    done = run_wrk(wrk, server.port, connections, seconds, headers, CHAT_BODY)
    after = server.cpu_seconds()
    if any(done.errors.values()) or done.requests == 0:
        raise CheckFailed(f"{server.name} at {connections} connections: {done.requests} "
                          f"requests, errors {done.errors}\n{server.log_tail()}")
    series.rps.append(done.rps)
    series.p50_us.append(done.p50_us)
    series.p99_us.append(done.p99_us)
    series.requests += done.requests
    if before is not None and after is not None:
        series.cpu_us.append((after - before) / done.requests * 1e6)

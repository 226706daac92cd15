"""The http section of RESULTS.md: per connection count, each variant's requests/s, its ratio
to the bare app of the same round, p50/p99 latency and the server's CPU time per request."""

from __future__ import annotations

from importlib import metadata

from benchmarks.http_measure import Series
from benchmarks.http_variants import VARIANTS
from benchmarks.results import machine
from benchmarks.stats import Spread, paired, spread

BASELINE = "bare"
MEMORY_TARGET = 0.85
LEASE_TARGET = 0.80
"""Issue #18: lease mode on Redis keeps at least 80% of the bare app's throughput."""
"""Issue #18: at 16 connections, gatekeeper on the memory store keeps at least 85% of the bare
app's throughput."""


def _cell(s: Spread, digits: int, scale: float = 1.0, thousands: bool = False) -> str:
    fmt = f",.{digits}f" if thousands else f".{digits}f"
    return (f"{s.median * scale:{fmt}} ({s.low * scale:{fmt}} .. "
            f"{s.high * scale:{fmt}})")


def ratios(series: Series, bare: Series) -> Spread:
    """Requests/s over the bare app's of the same round, median and range over rounds."""
    return spread([v / b for v, b in zip(series.rps, bare.rps, strict=True)])


def table(measured: dict[tuple[str, int], Series], connections: int) -> list[str]:
    bare = measured[(BASELINE, connections)]
    rows = ["| variant | requests/s | x bare | p50 ms | p99 ms | server CPU us/request | "
            "CPU added vs bare (range) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for v in VARIANTS:
        if (v.name, connections) not in measured:
            continue  # a Redis variant without redis-server
        s = measured[(v.name, connections)]
        ratio = "1.00" if v.name == BASELINE else _cell(ratios(s, bare), 2)
        cpu = added = "? (no /proc)"
        if s.cpu_us and bare.cpu_us:
            cpu, added = _cell(spread(s.cpu_us), 1), "-"
            if v.name != BASELINE:
                more = paired(s.cpu_us, bare.cpu_us)
                added = f"{more.added_cell(1)} ({more.range_cell(1)})"
        rows.append(f"| {v.name} | {_cell(spread(s.rps), 0, thousands=True)} | {ratio} | "
                    f"{_cell(spread(s.p50_us), 2, 1e-3)} | {_cell(spread(s.p99_us), 2, 1e-3)} "
                    f"| {cpu} | {added} |")
    return rows


def against_issue(measured: dict[tuple[str, int], Series], connections: int) -> list[str]:
    bare = measured[(BASELINE, connections)]
    slow = ratios(measured[("slowapi", connections)], bare).median
    lines = [f"- slowapi (one in-memory limit) keeps **{slow:.0%}** of the bare app's "
             f"throughput at {connections} connections (issue #18 measured about 54%)."]
    for name in ("gk-api-key", "gk-limits", "gk-limits-country", "gk-full"):
        kept = ratios(measured[(name, connections)], bare).median
        verdict = "meets" if kept >= MEMORY_TARGET else "**misses**"
        lines.append(f"- {name} keeps **{kept:.0%}** at {connections} connections: {verdict} "
                     f"the memory-store target of {MEMORY_TARGET:.0%}.")
    if ("gk-limits-redis", connections) in measured:
        kept = ratios(measured[("gk-limits-redis", connections)], bare).median
        lines.append(f"- gk-limits-redis (strict, round trips on every request) keeps "
                     f"**{kept:.0%}** (slowapi on Redis: about 30% in issue #18).")
    if ("gk-limits-lease", connections) in measured:
        kept = ratios(measured[("gk-limits-lease", connections)], bare).median
        verdict = "meets" if kept >= LEASE_TARGET else "**misses**"
        lines.append(f"- gk-limits-lease keeps **{kept:.0%}** at {connections} connections: "
                     f"{verdict} the lease-mode target of {LEASE_TARGET:.0%}.")
    return lines


def versions() -> str:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    return "- server: " + ", ".join(f"{d} {version(d)}" for d in ("uvicorn", "uvloop",
                                                                    "httptools"))


def http_section(measured: dict[tuple[str, int], Series], notes: list[str], rounds: int,
                 seconds: int, warmup: int, connections: tuple[int, ...], command: str,
                 tool: list[str]) -> str:
    out = [
        "## Over HTTP: uvicorn (uvloop, httptools) driven by wrk on loopback",
        "",
        f"`{command}`. Each variant is served by its own uvicorn process (one worker, "
        "uvloop, httptools, no access log, no proxy headers) on a loopback port; `wrk` (one "
        "thread) sends `POST /v1/chat/completions` with the in-process request's headers and "
        f"body (`chat_request.lua`). {rounds} round{'s' if rounds > 1 else ''}; in each, for "
        "each connection count, every variant in turn (the first rotating each round): a "
        f"{warmup} s warm-up run (discarded), then a {seconds} s timed run. Cells are the "
        "median over rounds (min .. max); **x bare** is the median of per-round ratios to "
        "the bare app's requests/s at the same connection count; **server CPU** is the "
        "server process's user + system time (`/proc/<pid>/stat`) across the timed run, per "
        "request; **CPU added** is the median of per-round differences to the bare app's.",
        "",
        "**The machine is shared and noisy** (2 cores, other jobs running), and wrk and the "
        "server share those 2 cores: requests/s and latency move with the load from run to "
        "run; trust the ratios to the bare app of the same round, and the CPU time per "
        "request (it does not count time spent waiting for the CPU), more than absolutes.",
        "",
        "| variant | what |",
        "| --- | --- |",
        *[f"| {v.name} | {v.what} |" for v in VARIANTS
          if (v.name, connections[0]) in measured],
    ]
    for c in connections:
        out += ["", f"### {c} connection{'s' if c > 1 else ''}", "", *table(measured, c)]
    top = max(connections)
    out += ["", f"### Against issue #18 ({top} connections)", "", *against_issue(measured, top),
            "", "### Checks", "", *[f"- {n}" for n in notes],
            "", "### Machine", "", *machine(), versions(), *[f"- {t}" for t in tool]]
    return "\n".join(out)

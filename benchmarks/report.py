"""The hot-path section of RESULTS.md: own cost, per-stage table, every scenario, checks."""

from __future__ import annotations

import statistics

from benchmarks.results import machine
from benchmarks.scenarios import Scenario
from benchmarks.stages import (
    CACHED,
    EMPTY,
    FOUNDATION_BUDGET,
    FOUNDATION_STRETCH,
    GROUPS,
    StageTimer,
)
from benchmarks.stats import Paired, paired, spread


def _by_name(scenarios: list[Scenario]) -> dict[str, Scenario]:
    return {s.name: s for s in scenarios}


def against(scenarios: list[Scenario], name: str, baseline: str) -> Paired:
    by = _by_name(scenarios)
    return paired(by[name].us, by[baseline].us)


def verdict(added: float, budget: float, stretch: float | None = None) -> str:
    if stretch is not None and added <= stretch:
        return "within the stretch goal"
    if added <= budget:
        return "within budget"
    return "**over budget**"


def own_cost(scenarios: list[Scenario]) -> list[str]:
    noop = against(scenarios, "noop-over-trivial", "trivial")
    gk = against(scenarios, "gk-over-trivial", "trivial")
    beyond = against(scenarios, "gk-over-trivial", "noop-over-trivial")
    slow = against(scenarios, "slowapi", "bare")
    gk_star = against(scenarios, "gk-api-key", "bare")
    noop_star = against(scenarios, "noop-middleware", "bare")
    half = slow.added / 2
    budget = f"{FOUNDATION_BUDGET:g} (stretch {FOUNDATION_STRETCH:g})"
    return [
        "| setup | paired with | added us/request | paired range | budget (us) | verdict |",
        "| --- | --- | ---: | ---: | ---: | --- |",
        f"| no-op middleware | trivial | {noop.added_cell()} | {noop.range_cell()} | - | - |",
        f"| **gatekeeper, cached API key, tenant + key networks** | trivial | "
        f"**{gk.added_cell()}** | {gk.range_cell()} | {budget} | "
        f"{verdict(gk.added, FOUNDATION_BUDGET, FOUNDATION_STRETCH)} |",
        f"| gatekeeper beyond the no-op middleware | noop-over-trivial | {beyond.added_cell()} | "
        f"{beyond.range_cell()} | - | - |",
        f"| no-op middleware | bare Starlette | {noop_star.added_cell()} | "
        f"{noop_star.range_cell()} | - | - |",
        f"| gatekeeper, same request | bare Starlette | {gk_star.added_cell()} | "
        f"{gk_star.range_cell()} | {half:.2f} (half of slowapi's) | "
        f"{verdict(gk_star.added, half)} |",
        f"| slowapi, one in-memory limit | bare Starlette | {slow.added_cell()} | "
        f"{slow.range_cell()} | - | - |",
        *_limit_rows(scenarios, half),
        *_with_headers(scenarios),
    ]


def _with_headers(scenarios: list[Scenario]) -> list[str]:
    """The same bar against slowapi sending its rate-limit headers, as gatekeeper sends its."""
    if "slowapi-headers" not in {s.name for s in scenarios}:
        return []
    slow = against(scenarios, "slowapi-headers", "bare")
    half = slow.added / 2
    return [f"| slowapi with its rate-limit headers (like for like) | bare Starlette | "
            f"{slow.added_cell()} | {slow.range_cell()} | - | - |",
            *(row.replace("(half of slowapi's)", "(half of slowapi with headers)")
              for row in _limit_rows(scenarios, half))]


_LIMIT_ROWS = (
    ("gk-one-limit", "gatekeeper, one per-key request limit (slowapi's one limit)"),
    ("gk-limits", "gatekeeper, per-key request + token limits (body estimated, usage "
                  "reconciled)"),
    ("gk-limits-concurrency", "**gatekeeper, request + token + concurrency limits**"),
    ("gk-full-policy", "**gatekeeper, the full policy** (binding, country rule, model rule, "
                       "limits on key and tenant, resale score)"),
)


def _limit_rows(scenarios: list[Scenario], half: float) -> list[str]:
    """The limits issue's bar: all of gatekeeper's limits against half of slowapi's one."""
    names = {s.name for s in scenarios}
    rows = []
    for name, label in _LIMIT_ROWS:
        if name in names:
            paired = against(scenarios, name, "bare")
            rows.append(f"| {label} | bare Starlette | {paired.added_cell()} | "
                        f"{paired.range_cell()} | {half:.2f} (half of slowapi's) | "
                        f"{verdict(paired.added, half)} |")
    return rows


def stage_table(timer: StageTimer, own: Paired) -> list[str]:
    empty = spread(timer.us[EMPTY])
    rows = ["| stage | what | us per call | paired range | budget |",
            "| --- | --- | ---: | ---: | --- |"]
    for group, title in GROUPS.items():
        members = [s for s in timer.stages if s.group == group]
        if not members:
            continue
        rows.append(f"| **{title}** | | | | |")
        for s in members:
            net = timer.net(s.id)
            rows.append(f"| `{s.id}` | {s.what} | {net.added:.3f} | {net.low:+.3f} .. "
                        f"{net.high:+.3f} | {s.budget or '-'} |")
        if group == CACHED:
            summed = [s for s in members if not s.within]
            total = sum(timer.net(s.id).added for s in summed)
            rows.append(f"| sum | {' + '.join(f'`{s.id}`' for s in summed)} | **{total:.3f}** "
                        f"| | {FOUNDATION_BUDGET:g} (stretch {FOUNDATION_STRETCH:g}) |")
            rows.append(f"| rest | the middleware's own glue: gatekeeper's own cost "
                        f"({own.added:.2f}, above) minus the sum (its coroutine, scope reads "
                        f"and writes, `decision.allowed`, the await of the app) | "
                        f"{own.added - total:.3f} | | |")
    rows.append(f"| `{EMPTY}` | reference: calling a function that does nothing, subtracted "
                f"from every row | {empty.median:.3f} (gross) | {empty.low:.3f} .. "
                f"{empty.high:.3f} | |")
    return rows


def scenario_table(scenarios: list[Scenario]) -> list[str]:
    by = _by_name(scenarios)
    rows = ["| # | scenario | paired with | median us/req | min | max | added (us) | "
            "paired range | x baseline |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    number = 0
    for s in scenarios:
        label = "ref" if s.reference else str(number := number + 1)
        cells = spread(s.us).cells()
        if s.baseline is None:
            extra = ["-", "(baseline)", "-", "-"]
        else:
            p = paired(s.us, by[s.baseline].us)
            extra = [s.baseline, p.added_cell(), p.range_cell(), f"{p.ratio:.2f}"]
        rows.append(f"| {label} | {s.name} | {extra[0]} | {' | '.join(cells)} | "
                    f"{' | '.join(extra[1:])} |")
    return rows


def hot_path_section(scenarios: list[Scenario], timer: StageTimer, notes: list[str],
                     rounds: int, requests: int, stage_calls: int, command: str) -> str:
    own = against(scenarios, "gk-over-trivial", "trivial")
    bare = statistics.median(_by_name(scenarios)["bare"].us)
    trivial = statistics.median(_by_name(scenarios)["trivial"].us)
    lines = [
        "## This tree, timed: own cost, stages, scenarios",
        "",
        f"`{command}`: {rounds} rounds; in each, every scenario runs {requests} requests "
        "(interleaved round-robin, the first scenario rotating each round), then every stage "
        f"runs {stage_calls} calls (likewise). Microseconds per request. **added** is the median "
        "over rounds of (scenario - its baseline in the same round); **paired range** the "
        "smallest and largest of those per-round differences; **x baseline** the median of "
        f"the per-round ratios. Baselines this run: bare Starlette {bare:.2f} us, the trivial "
        f"app {trivial:.2f} us (medians).",
        "",
        "### gatekeeper's own cost (the foundation path), beside the no-op middleware and "
        "slowapi",
        "",
        *own_cost(scenarios),
        "",
        "The budgets are ROADMAP's: the foundation path (route, headers, cached key, tenant and "
        f"network binding, metrics) at most {FOUNDATION_BUDGET:g} us added in process "
        f"(stretch {FOUNDATION_STRETCH:g}), and the whole policy at most half of what slowapi "
        "adds for its single in-memory limit, measured in this same run.",
        "",
        "### Per-stage cost (this tree)",
        "",
        "Each stage called in isolation on the inputs of one real request (a fresh Gatekeeper, "
        "its API key cached, its decision record fresh), net of an empty call timed in the same "
        "round: median over rounds, in us per call. Rows are registered in "
        "`benchmarks/stages.py`; later stages (limits, geo, resale) add theirs there.",
        "",
        *stage_table(timer, own),
        "",
        "### Every scenario",
        "",
        *scenario_table(scenarios),
        "",
        *(f"- **{s.name}**: {s.what}" for s in scenarios),
        "",
        "### Checks (before and after timing; any failure exits non-zero and prints no table)",
        "",
        *(f"- {n}" for n in notes),
        "- stages: each stage's answer was checked once before timing (route, scan, reused "
        "decision, facts, principal, allowed decision, refusal reason, one audit line)",
        "",
        "### Method",
        "",
        "- Hand-written ASGI driver in one asyncio event loop: the scope is built once per "
        "scenario and shallow-copied per request (Starlette and slowapi write into it; reusing "
        "one dict would let slowapi skip its check after the first request), `receive` returns "
        "one `http.request` message, `send` discards. No HTTP client, no server, no sockets.",
        "- The trivial app counts its call and sends `http.response.start` (200, no headers) "
        "and an empty `http.response.body`: against it a middleware's own cost is not lost in "
        "the framework's.",
        "- Each scenario was warmed up (min(requests, 1000) requests) after its first checked "
        "request; `gc.collect()` runs before each timed batch; GC stays enabled while timing.",
        "- Gatekeeper runs with its default `Metrics()` (recording is included), the system "
        "clock and its default `keys.cache_ttl` of 1 s: a cached key (and its decision record) "
        "is re-checked against the memory store once a second, included and negligible per "
        "request.",
        "- The `gatekeeper.audit` logger is set to WARNING so refusals print nothing; "
        "`gk-wrong-network-audited` alone builds and logs its audit lines (to a NullHandler).",
        "",
        "### Machine",
        "",
        *machine(),
    ]
    return "\n".join(lines)

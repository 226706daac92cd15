"""The same workload timed in two (or more) checkouts, interleaved round by round.

    python benchmarks/before_after.py --tree before=PATH --tree after=PATH
                                      [--rounds N] [--requests N] [--quick] [--output PATH]

Every round starts one child process per tree (``workload.py --time``; the tree order rotates
each round); each child times every scenario once, interleaved, so a setup and its baseline
are measured seconds apart in the same process. Reported: per tree, the median over rounds of
(setup - baseline) in microseconds, and the median over rounds of the per-round change between
the first tree and each other. On a noisy machine these wander: ``instructions.py`` gives the
same comparison in instructions, which do not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import results
from benchmarks.driver import rotation
from benchmarks.stats import paired, spread
from benchmarks.trees import THIS_TREE, Tree, describe, parse_tree
from benchmarks.workload import OWN_COST, SCENARIOS

HERE = Path(__file__).resolve().parent
DEFAULT_ROUNDS, DEFAULT_REQUESTS = 9, 20_000
QUICK_ROUNDS, QUICK_REQUESTS = 2, 500

Series = dict[str, dict[str, list[float]]]
"""tree label -> scenario -> microseconds per request, one value per round."""


class TimingFailed(Exception):
    pass


def time_tree(tree: Tree, requests: int, round_index: int) -> tuple[dict[str, float], list[str]]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, str(HERE / "workload.py"), "--tree", str(tree.path), "--time",
         "--requests", str(requests), "--round", str(round_index)],
        env=env, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise TimingFailed(f"{tree.label}: exit {done.returncode}\n{done.stdout}"
                           f"{done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(out["gatekeeper"]).resolve() != (tree.path / "gatekeeper").resolve():
        raise TimingFailed(f"{tree.label}: timed gatekeeper at {out['gatekeeper']}")
    return {name: values[0] for name, values in out["us"].items()}, list(out["checks"])


def measure(trees: list[Tree], rounds: int, requests: int,
            progress: bool) -> tuple[Series, dict[str, list[str]]]:
    series: Series = {t.label: {name: [] for name in SCENARIOS} for t in trees}
    checks: dict[str, list[str]] = {}
    for r in range(rounds):
        for tree in rotation(trees, r):
            us, checks[tree.label] = time_tree(tree, requests, r)
            for name, value in us.items():
                series[tree.label][name].append(value)
        if progress:
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return series, checks


def section(trees: list[Tree], series: Series, checks: dict[str, list[str]], rounds: int,
            requests: int, command: str) -> str:
    first = trees[0]
    others = trees[1:]
    head = " | ".join(f"{t.label}: added (range)" for t in trees)
    change = " | ".join(f"{t.label} - {first.label}" for t in others)
    lines = [
        "## Before and after, timed (us)",
        "",
        f"`{command}`: {rounds} rounds; in each, one child process per tree (the order rotating), "
        f"each timing every scenario of `benchmarks/workload.py` for {requests} requests, "
        "interleaved. **added**: median over rounds of (setup - baseline, both from the same "
        "child); **range**: the smallest and largest of those; the change columns: median over "
        "rounds of the per-round difference of added costs. Trees: "
        + "; ".join(describe(t) for t in trees) + ".",
        "",
        f"| setup | baseline | {head} |" + (f" {change} |" if others else ""),
        "| --- | --- |" + " ---: |" * (len(trees) + len(others)),
    ]
    for name, base, what in OWN_COST:
        cells = []
        per_tree = {}
        for t in trees:
            p = paired(series[t.label][name], series[t.label][base])
            per_tree[t.label] = [v - b for v, b in zip(series[t.label][name],
                                                       series[t.label][base], strict=True)]
            cells.append(f"{p.added_cell()} ({p.low:+.2f} .. {p.high:+.2f})")
        for t in others:
            delta = paired(per_tree[t.label], per_tree[first.label])
            cells.append(delta.added_cell())
        lines.append(f"| {what} | {base} | {' | '.join(cells)} |")
    slow_half = [paired(series[t.label]["slowapi"], series[t.label]["bare"]).added / 2
                 for t in trees]
    lines.append("| whole-policy budget: half of what slowapi adds | bare | "
                 + " | ".join(f"{v:.2f}" for v in slow_half) + " |" + " |" * len(others))
    lines += [
        "",
        "Medians per scenario (us per request; min .. max over rounds):",
        "",
        "| scenario | " + " | ".join(t.label for t in trees) + " |",
        "| --- |" + " ---: |" * len(trees),
    ]
    for name in SCENARIOS:
        cells = []
        for t in trees:
            s = spread(series[t.label][name])
            cells.append(f"{s.median:.2f} ({s.low:.2f} .. {s.high:.2f})")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += [
        "",
        "Checks (the last child of each tree):",
        "",
        *(f"- {label}: {c}" for label, cs in checks.items() for c in cs),
        "",
        "gatekeeper runs here with `keys.cache_ttl: 60` (see `benchmarks/workload.py`), the "
        "system clock, default metrics; the do-nothing and Starlette apps are this checkout's "
        "(`benchmarks/apps.py`) for every tree.",
        "",
        "Machine:",
        "",
        *results.machine(),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tree", type=parse_tree, action="append", metavar="[LABEL=]PATH",
                        help="a checkout to time (repeatable; the first is the reference)")
    parser.add_argument("--rounds", type=int, help=f"default {DEFAULT_ROUNDS}")
    parser.add_argument("--requests", type=int, help=f"default {DEFAULT_REQUESTS}")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROUNDS} rounds x {QUICK_REQUESTS}; print only "
                             "(unless --output)")
    parser.add_argument("--output", type=Path,
                        help=f"the results file whose before-after section is rewritten "
                             f"(default {results.DEFAULT_PATH}; none with --quick)")
    args = parser.parse_args(argv)
    trees: list[Tree] = args.tree or [THIS_TREE]
    if len({t.label for t in trees}) != len(trees):
        parser.error("two trees with the same label")
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    requests = args.requests or (QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)
    if rounds < 1 or requests < 1:
        parser.error("--rounds and --requests must be at least 1")
    output = args.output if args.output is not None else (
        None if args.quick else results.DEFAULT_PATH)
    try:
        series, checks = measure(trees, rounds, requests, progress=True)
    except TimingFailed as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    command = "python benchmarks/before_after.py " + " ".join(
        [*(f"--tree {t.label}={t.path}" for t in (args.tree or [])),
         *(["--quick"] if args.quick else []),
         *([f"--rounds {rounds} --requests {requests}"] if args.rounds or args.requests
           else [])])
    text = section(trees, series, checks, rounds, requests, command.strip())
    print(text)
    if output is not None:
        results.update(output, "before-after", text)
        print(f"written to {output} (section before-after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

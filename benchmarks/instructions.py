"""Instructions per request, counted by valgrind's cachegrind: numbers that do not move with
machine load, for this checkout or any other.

    python benchmarks/instructions.py [--tree [LABEL=]PATH ...] [--requests N1,N2[,N3]]
                                      [--scenarios A,B] [--stages] [--jobs J] [--quick]
                                      [--output PATH]

Each scenario of ``workload.py`` runs in a child process under
``valgrind --tool=cachegrind --cache-sim=no`` once per request count; the slope
(Ir(N_last) - Ir(N_first)) / (N_last - N_first) is the cost of one request, with the start-up
(interpreter, imports, building the apps, probes, warm-up) cancelled out. With three counts the
two halves' slopes are compared as a check that the cost per request is steady. ``--tree``
(repeatable) points the child at another checkout (first on its ``sys.path``); with two trees
the table shows the second against the first. ``--stages`` also counts each stage of
``stages.py`` (this checkout only: stages use its internals) per call, net of an empty call.

Children run with ``PYTHONHASHSEED=0`` and ``PYTHONDONTWRITEBYTECODE=1``: every run of a
scenario compiles or loads exactly the same modules (so start-up is the same at every request
count and cancels), and no other checkout gets a ``__pycache__`` written into it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import results
from benchmarks.stages import CACHED, EMPTY, FOUNDATION_BUDGET, GROUPS, STAGES
from benchmarks.trees import THIS_TREE, Tree, describe, parse_tree
from benchmarks.workload import OWN_COST, SCENARIOS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_REQUESTS = (1000, 2000, 3000)
QUICK_REQUESTS = (50, 150)
DEFAULT_STAGE_CALLS = (2000, 6000)
QUICK_STAGE_CALLS = (200, 600)
_IREFS = re.compile(r"I\s+refs:\s+([\d,]+)")


class CountFailed(Exception):
    pass


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc
    if len(counts) < 2 or any(a >= b for a, b in pairwise(counts)) or counts[0] < 1:
        raise argparse.ArgumentTypeError("need at least two increasing positive counts")
    return counts


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    return env


def run_child(argv: list[str], env: dict[str, str], valgrind: str | None) -> tuple[int, str]:
    """(instructions or 0 without valgrind, the child's stdout)."""
    command = [sys.executable, *argv]
    if valgrind is not None:
        command = [valgrind, "--tool=cachegrind", "--cache-sim=no",
                   "--cachegrind-out-file=/dev/null", *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800,
                          check=False, cwd=ROOT)
    if done.returncode != 0:
        raise CountFailed(f"{' '.join(argv)}: exit {done.returncode}\n{done.stdout}"
                          f"{done.stderr[-2000:]}")
    if valgrind is None:
        return 0, done.stdout
    found = _IREFS.findall(done.stderr)
    if not found:
        raise CountFailed(f"{' '.join(argv)}: no 'I refs' in valgrind's output:\n"
                          f"{done.stderr[-2000:]}")
    return int(found[-1].replace(",", "")), done.stdout


@dataclass(frozen=True)
class Job:
    key: tuple[str, str]
    """(tree label or 'stages', scenario or stage id)"""
    count: int
    argv: list[str]
    tree: Path


def workload_job(tree: Tree, scenario: str, count: int) -> Job:
    return Job((tree.label, scenario), count,
               [str(HERE / "workload.py"), "--tree", str(tree.path), "--scenario", scenario,
                "--requests", str(count)], tree.path)


def stage_job(stage_id: str, count: int) -> Job:
    return Job(("stages", stage_id), count,
               [str(HERE / "stages.py"), "--stage", stage_id, "--calls", str(count)], ROOT)


def check_output(job: Job, stdout: str) -> str:
    """The child's JSON line: it imported the right gatekeeper, and its checks passed."""
    try:
        out = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise CountFailed(f"{' '.join(job.argv)}: unreadable output {stdout!r}") from exc
    where = Path(out.get("gatekeeper", "")).resolve()
    if where != (job.tree / "gatekeeper").resolve():
        raise CountFailed(f"{' '.join(job.argv)}: measured gatekeeper at {where}, "
                          f"not {job.tree}")
    return str(out.get("check", ""))


@dataclass
class Slope:
    per_unit: float
    """(Ir(last) - Ir(first)) / (last - first)"""
    halves: tuple[float, ...]
    """The slope between each pair of neighbouring counts (one value with two counts)."""
    counts: dict[int, int]

    @property
    def steadiness(self) -> float:
        """Largest relative gap between the slopes of neighbouring count pairs."""
        if len(self.halves) < 2 or not self.per_unit:
            return 0.0
        return (max(self.halves) - min(self.halves)) / abs(self.per_unit)


def slope(counts: dict[int, int]) -> Slope:
    ns = sorted(counts)
    pairs = list(pairwise(ns))
    halves = tuple((counts[b] - counts[a]) / (b - a) for a, b in pairs)
    return Slope((counts[ns[-1]] - counts[ns[0]]) / (ns[-1] - ns[0]), halves, counts)


def run_jobs(jobs: Sequence[Job], workers: int, valgrind: str,
             progress: bool) -> tuple[dict[tuple[str, str], Slope], list[str]]:
    env = child_env()
    counts: dict[tuple[str, str], dict[int, int]] = {}
    checks: dict[tuple[str, str], str] = {}
    done = 0

    def one(job: Job) -> tuple[Job, int, str]:
        instructions, stdout = run_child(job.argv, env, valgrind)
        return job, instructions, check_output(job, stdout)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for job, instructions, check in pool.map(one, jobs):
            counts.setdefault(job.key, {})[job.count] = instructions
            if job.count == max(j.count for j in jobs if j.key == job.key) and check:
                checks[job.key] = f"{job.key[0]}: {check}"
            done += 1
            if progress:
                print(f"[{done}/{len(jobs)}] {job.key[0]} {job.key[1]} x{job.count}: "
                      f"{instructions:,} Ir", file=sys.stderr, flush=True)
    return {key: slope(c) for key, c in counts.items()}, list(checks.values())


def _ir(value: float) -> str:
    return f"{value:,.0f}"


def workload_tables(trees: list[Tree], scenarios: list[str],
                    slopes: dict[tuple[str, str], Slope]) -> list[str]:
    two = len(trees) == 2
    head = " | ".join(t.label for t in trees)
    extra = f" | {trees[1].label} - {trees[0].label} | {trees[1].label} / {trees[0].label}" \
        if two else ""
    align = " ---: |" * (len(trees) + (2 if two else 0))

    def row(name: str, values: list[float]) -> str:
        cells = " | ".join(_ir(v) for v in values)
        if two:
            ratio = f"{values[1] / values[0]:.2f}" if values[0] else "-"
            cells += f" | {values[1] - values[0]:+,.0f} | {ratio}"
        return f"| {name} | {cells} |"

    lines = ["Own cost, in instructions per request (each setup minus its baseline, from the "
             "slopes below):", "",
             f"| setup | baseline | {head}{extra} |", f"| --- | --- |{align}"]
    for name, base, what in OWN_COST:
        if (trees[0].label, name) in slopes and (trees[0].label, base) in slopes:
            values = [slopes[t.label, name].per_unit - slopes[t.label, base].per_unit
                      for t in trees]
            lines.append(row(what, values).replace(f"| {what} |", f"| {what} | {base} |", 1))
    if all((t.label, "slowapi") in slopes and (t.label, "bare") in slopes for t in trees):
        halves = [(slopes[t.label, "slowapi"].per_unit - slopes[t.label, "bare"].per_unit) / 2
                  for t in trees]
        lines.append(row("whole-policy budget: half of what slowapi adds", halves)
                     .replace("adds |", "adds | bare |", 1))
    lines += ["", "Every scenario, instructions per request (the slope), and how steady the slope "
              "was (the largest gap between the slopes of neighbouring request counts, relative "
              "to the slope):", "",
              f"| scenario | paired with | {head}{extra} | steadiness |",
              f"| --- | --- |{align} ---: |"]
    for name in scenarios:
        values = [slopes[t.label, name].per_unit for t in trees]
        steady = max(slopes[t.label, name].steadiness for t in trees)
        base = SCENARIOS[name][0] or "(baseline)"
        lines.append(row(name, values).replace(f"| {name} |", f"| {name} | {base} |", 1)
                     [:-1] + f"| {steady:.2%} |")
    return lines


def stage_table(slopes: dict[tuple[str, str], Slope], own: float | None) -> list[str]:
    """``own``: this checkout's own cost (gk-over-trivial - trivial) when it was counted."""
    empty = slopes["stages", EMPTY].per_unit
    lines = ["| stage | what | Ir per call (net) | budget |", "| --- | --- | ---: | --- |"]
    for group, title in GROUPS.items():
        members = [s for s in STAGES if s.group == group and ("stages", s.id) in slopes]
        if not members:
            continue
        lines.append(f"| **{title}** | | | |")
        for s in members:
            lines.append(f"| `{s.id}` | {s.what} | {_ir(slopes['stages', s.id].per_unit - empty)}"
                         f" | {s.budget or '-'} |")
        if group == CACHED:
            summed = [s for s in members if not s.within]
            total = sum(slopes["stages", s.id].per_unit - empty for s in summed)
            lines.append(f"| sum | {' + '.join(f'`{s.id}`' for s in summed)} | **{_ir(total)}** "
                         f"| {FOUNDATION_BUDGET:g} us for the whole path |")
            if own is not None:
                lines.append(f"| rest | the middleware's own glue: gatekeeper's own cost in "
                             f"this checkout ({_ir(own)}, above) minus the sum | "
                             f"{_ir(own - total)} | |")
    lines.append(f"| `{EMPTY}` | reference: a call of a function that does nothing, subtracted "
                 f"from every row | {_ir(empty)} (gross) | |")
    return lines


def own_cost_here(trees: list[Tree], slopes: dict[tuple[str, str], Slope]) -> float | None:
    for t in trees:
        if t.path == THIS_TREE.path and (t.label, "gk-over-trivial") in slopes \
                and (t.label, "trivial") in slopes:
            return slopes[t.label, "gk-over-trivial"].per_unit - slopes[t.label, "trivial"].per_unit
    return None


def section(trees: list[Tree], scenarios: list[str], slopes: dict[tuple[str, str], Slope],
            checks: list[str], counts: tuple[int, ...], stage_counts: tuple[int, ...] | None,
            command: str) -> str:
    lines = [
        "## Before and after, in instructions (cachegrind)",
        "",
        f"`{command}`. Each scenario of `benchmarks/workload.py` run under `valgrind "
        f"--tool=cachegrind --cache-sim=no` with {', '.join(map(str, counts))} requests, one "
        "child process each; instructions per request = (Ir(last) - Ir(first)) / (last - "
        "first), which cancels start-up and does not move with machine load. Trees: "
        + "; ".join(describe(t) for t in trees) + ".",
        "",
        *workload_tables(trees, scenarios, slopes),
    ]
    if stage_counts is not None:
        lines += [
            "",
            "### Per-stage instructions (this checkout)",
            "",
            f"Each stage of `benchmarks/stages.py` called {' and '.join(map(str, stage_counts))}"
            " times in a child under cachegrind; the slope per call, net of an empty call:",
            "",
            *stage_table(slopes, own_cost_here(trees, slopes)),
        ]
    lines += [
        "",
        "Checks (each counted child probed its scenario before and after the requests, and "
        "imported gatekeeper from the tree it was given):",
        "",
        *(f"- {c}" for c in checks),
        "",
        "Method: gatekeeper runs with `keys.cache_ttl: 60` here (the maximum) so that no "
        "key re-read from the store falls inside the counted requests, whatever the speed "
        "under valgrind; each gatekeeper child checks the store was read exactly once. Python "
        "under cachegrind runs about 50x slower; instruction counts include the interpreter's "
        "own work (the bytecode loop, allocation, GC) but no kernel time, and do not see "
        "cache misses or branch mispredictions: they rank setups and show a before/after "
        "change reliably, and microseconds remain the unit of the budgets. The scenarios "
        "without gatekeeper run the same code whichever tree is given: their differences "
        "between trees (tens of instructions; a few thousand for slowapi, whose limiter works "
        "on wall-clock windows) are the noise floor of a comparison.",
        "",
        "Machine:",
        "",
        *results.machine(),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tree", type=parse_tree, action="append", metavar="[LABEL=]PATH",
                        help="a checkout to count (repeatable; default: this one)")
    parser.add_argument("--requests", type=parse_counts,
                        help="request counts, increasing (default "
                             f"{','.join(map(str, DEFAULT_REQUESTS))})")
    parser.add_argument("--scenarios", help=f"comma-separated (default all: "
                                            f"{','.join(SCENARIOS)})")
    parser.add_argument("--stages", action="store_true",
                        help="also count each pipeline stage (this checkout)")
    parser.add_argument("--stage-calls", type=parse_counts,
                        help=f"default {','.join(map(str, DEFAULT_STAGE_CALLS))}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="valgrind children at once (counts do not depend on load)")
    parser.add_argument("--quick", action="store_true",
                        help=f"requests {','.join(map(str, QUICK_REQUESTS))}; print only "
                             "(unless --output)")
    parser.add_argument("--output", type=Path,
                        help=f"the results file whose instructions section is rewritten "
                             f"(default {results.DEFAULT_PATH}; none with --quick)")
    args = parser.parse_args(argv)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind not found: install it (apt-get install valgrind) to count "
              "instructions", file=sys.stderr)
        return 2
    trees: list[Tree] = args.tree or [THIS_TREE]
    if len({t.label for t in trees}) != len(trees):
        parser.error("two trees with the same label")
    scenarios = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    for name in list(scenarios):  # a baseline is needed to show what a setup adds
        base = SCENARIOS[name][0]
        if base is not None and base not in scenarios:
            scenarios.insert(0, base)
    counts = args.requests or (QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)
    stage_counts = args.stage_calls or (QUICK_STAGE_CALLS if args.quick
                                        else DEFAULT_STAGE_CALLS)
    jobs = [workload_job(t, s, n) for t in trees for s in scenarios for n in counts]
    if args.stages:
        jobs += [stage_job(sid, n) for sid in [EMPTY, *(s.id for s in STAGES)]
                 for n in stage_counts]
    output = args.output if args.output is not None else (
        None if args.quick else results.DEFAULT_PATH)
    try:
        slopes, checks = run_jobs(jobs, max(1, args.jobs), valgrind, progress=True)
    except CountFailed as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    command = "python benchmarks/instructions.py " + " ".join(
        [*(f"--tree {t.label}={t.path}" for t in (args.tree or [])),
         *(["--quick"] if args.quick else []),
         *([f"--requests {','.join(map(str, counts))}"] if args.requests else []),
         *([f"--scenarios {args.scenarios}"] if args.scenarios else []),
         *(["--stages"] if args.stages else [])])
    text = section(trees, scenarios, slopes, checks, counts,
                   stage_counts if args.stages else None, command.strip())
    print(text)
    if output is not None:
        results.update(output, "instructions", text)
        print(f"written to {output} (section instructions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

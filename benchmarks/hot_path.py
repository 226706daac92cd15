"""What each setup and each pipeline stage costs per request, driven in process by a
hand-written ASGI loop.

    python benchmarks/hot_path.py [--quick] [--rounds N] [--requests N] [--stage-calls N]
                                  [--output PATH]

Scenarios (``scenarios.py``) wrap the same tiny Starlette app, or a do-nothing app that sends
200 with an empty body; the driver is ``driver.py``. In every round each scenario is timed
once (round-robin, the first one rotating), then each pipeline stage (``stages.py``) is timed
in isolation. Every scenario is reported against its baseline of the same round (``stats.py``).
Each scenario is checked (status, reason code, app call counter, metrics) before and after
timing, and any surprise exits non-zero. Without ``--quick`` the hot-path section of
``benchmarks/RESULTS.md`` (or ``--output``) is rewritten; the other sections are left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import results
from benchmarks.driver import CheckFailed, rotation, timed
from benchmarks.driver import run as run_requests
from benchmarks.report import hot_path_section
from benchmarks.scenarios import (
    Scenario,
    build_scenarios,
    check,
    check_slowapi_driver,
    final_checks,
)
from benchmarks.stages import StageTimer, build_context

DEFAULT_ROUNDS, DEFAULT_REQUESTS, DEFAULT_STAGE_CALLS = 9, 20_000, 50_000
QUICK_ROUNDS, QUICK_REQUESTS, QUICK_STAGE_CALLS = 3, 500, 1_000


async def run(rounds: int, requests: int, stage_calls: int,
              progress: bool) -> tuple[list[Scenario], StageTimer, list[str]]:
    scenarios = await build_scenarios()
    notes = [await check_slowapi_driver()]
    timer = StageTimer(await build_context())
    warmup = min(requests, 1000)
    for s in scenarios:
        await check(s, "first request")  # also fills gatekeeper's credential cache
        await run_requests(s.app, s.scope, warmup)
        s.requests += warmup
        await check(s, "after warm-up")
    for r in range(rounds):
        for s in rotation(scenarios, r):
            gc.collect()
            ns = await timed(s.app, s.scope, requests)
            s.requests += requests
            s.us.append(ns / requests / 1000)
        timer.round(r, stage_calls)
        if progress:
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    for s in scenarios:
        await check(s, "after timing")
    notes += final_checks(scenarios)
    return scenarios, timer, notes


def silence_audit() -> None:
    """Refusals are timed without their audit line (gk-wrong-network-audited has its own
    logger); the NullHandler also keeps gatekeeper's start-up warning about an audit logger
    without a handler out of the output."""
    logger = logging.getLogger("gatekeeper.audit")
    logger.setLevel(logging.WARNING)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    print("gatekeeper.audit logger silenced (level WARNING): refusals are not logged",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROUNDS} rounds x {QUICK_REQUESTS} requests, "
                             f"{QUICK_STAGE_CALLS} stage calls; print only (unless --output)")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--requests", type=int,
                        help=f"requests per scenario per round (default {DEFAULT_REQUESTS})")
    parser.add_argument("--stage-calls", type=int,
                        help=f"calls per stage per round (default {DEFAULT_STAGE_CALLS})")
    parser.add_argument("--output", type=Path,
                        help=f"the results file whose hot-path section is rewritten (default "
                             f"{results.DEFAULT_PATH}; none with --quick)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    requests = args.requests or (QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)
    calls = args.stage_calls or (QUICK_STAGE_CALLS if args.quick else DEFAULT_STAGE_CALLS)
    if rounds < 1 or requests < 1 or calls < 1:
        parser.error("--rounds, --requests and --stage-calls must be at least 1")
    output = args.output if args.output is not None else (
        None if args.quick else results.DEFAULT_PATH)

    silence_audit()
    try:
        scenarios, timer, notes = asyncio.run(run(rounds, requests, calls,
                                                  progress=not args.quick))
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    command = "python benchmarks/hot_path.py" + (" --quick" if args.quick else "")
    if args.rounds or args.requests or args.stage_calls:
        command += f" --rounds {rounds} --requests {requests} --stage-calls {calls}"
    text = hot_path_section(scenarios, timer, notes, rounds, requests, calls, command)
    print(text)
    if output is not None:
        results.update(output, "hot-path", text)
        print(f"written to {output} (section hot-path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``gatekeeper replay FILE``: recorded traffic through the pipeline and the resale score.

Writes one JSON line per protected request (``--out``; ``ts``, ``key_id``, ``tenant``,
``action``, ``status``, ``reason``, ``score``, the score's top ``reasons`` and what it
``would`` do) and prints a summary: requests by action and by reason, and the keys with the
highest scores. Progress goes to stderr. Keys are looked up in ``--store`` or the policy's
store; nothing is written to it (a suspension lasts for the replay only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import IO, Any

from gatekeeper.decision import ALLOW
from gatekeeper.errors import MISSING, ConfigError
from gatekeeper.policy.keys import load_pepper
from gatekeeper.policy.load import load_policy
from gatekeeper.policy.model import Policy
from gatekeeper.policy.resale import OFF
from gatekeeper.replay import RequestRecord, read_records
from gatekeeper.resale.report import Timelines, markdown, render, write_report
from gatekeeper.resale.scored import Locate, Scored, replay_scored
from gatekeeper.store import DEFAULT_STORE_URL, store_from_url
from gatekeeper.store.base import Store

POLICY_ENV = "GATEKEEPER_POLICY"
PROGRESS_EVERY = 0.5
"""Seconds between progress lines on stderr."""


def add_parser(commands: Any) -> None:
    replay = commands.add_parser(
        "replay", help="run recorded requests (JSON lines) through the policy and the score")
    replay.add_argument("file", help="JSON lines: ts, client_ip, method, path, headers, "
                                     "[body, usage, duration_ms]; '-' reads stdin")
    replay.add_argument("--policy", default=os.environ.get(POLICY_ENV),
                        help=f"policy file (default: ${POLICY_ENV})")
    replay.add_argument("--store", help="store URL, overriding the policy's")
    replay.add_argument("--out", help="write one decision per request here (JSON lines)")
    replay.add_argument("--quiet", action="store_true", help="no progress on stderr")
    replay.add_argument("--report", metavar="FILE.html",
                        help="write a self-contained HTML page: the summary and the highest "
                             "scoring keys' scores over time, their first flag marked")


def run(args: argparse.Namespace) -> int:
    if not args.policy:
        raise ConfigError("--policy", MISSING, f"is required (or set ${POLICY_ENV})")
    policy = load_policy(args.policy)
    pepper = load_pepper(policy.keys)
    store = store_from_url(args.store or policy.store or DEFAULT_STORE_URL,
                           "--store" if args.store else "store", create=False)
    try:
        source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError("FILE", args.file, f"cannot be read: {exc.strerror}") from None
    out: IO[str] | None = None
    try:
        out = open(args.out, "w", encoding="utf-8") if args.out else None  # noqa: SIM115
        summary = asyncio.run(replay_file(read_records(source), policy, store, pepper, out,
                                          None if args.quiet else sys.stderr,
                                          timelines=Timelines() if args.report else None))
    except OSError as exc:
        raise ConfigError("--out", args.out, f"cannot be written: {exc.strerror}") from None
    finally:
        source.close()
        if out is not None:
            out.close()
    if summary.timelines is not None:
        write_report(args.report, render(f"gatekeeper replay {args.file}", summary.tables(),
                                         summary.timelines, [summary.heading(policy)]))
    print("\n".join(summary.lines(policy)))
    return 0


class Summary:
    """What ``replay`` prints at the end."""

    def __init__(self, timelines: Timelines | None = None) -> None:
        self.timelines = timelines
        """Every known key's scores, for the report."""
        self.requests = 0
        self.actions: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.top: dict[str, tuple[float, str, str, list[str]]] = {}
        """key id -> (its highest score, tenant, the action then, the reasons then)."""
        self.seconds = 0.0

    def add(self, scored: Scored) -> None:
        self.requests += 1
        self.actions[scored.action] += 1
        self.reasons[scored.reason] += 1
        key = scored.decision.key_id
        total = scored.score.total
        if self.timelines is not None and key is not None and scored.decision.principal:
            self.timelines.add(key, scored.decision.tenant or "-", scored.record.ts, total,
                               scored.action)
            if scored.would != ALLOW or scored.action != ALLOW:
                self.timelines.mark(key, scored.record.ts, f"first {scored.would}")
        if key is not None and total > 0 and total > self.top.get(key, (0.0,))[0]:
            self.top[key] = (total, scored.decision.tenant or "-", scored.would,
                             scored.score.reasons())

    def heading(self, policy: Policy) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        mode = policy.resale.mode
        return (f"{self.requests} requests in {self.seconds:.1f} s ({rate:,.0f}/s); resale "
                f"score {mode if mode != OFF else 'off in the policy: scored in shadow'}")

    def tables(self, keys: int = 10) -> list[tuple[str, list[list[str]]]]:
        """(heading, rows with a header row first): by action, by reason, top keys."""
        ranked = sorted(self.top.items(), key=lambda item: -item[1][0])[:keys]
        found = [
            ("Actions", [["action", "requests"]] +
             [[name, str(n)] for name, n in self.actions.most_common()]),
            ("Reasons", [["reason", "requests"]] +
             [[name, str(n)] for name, n in self.reasons.most_common()])]
        if ranked:
            found.append(("Highest scores", [
                ["key id", "tenant", "highest score", "would", "top reasons"]] + [
                [key, tenant, f"{total:.0f}", would, ", ".join(reasons)]
                for key, (total, tenant, would, reasons) in ranked]))
        return found

    def lines(self, policy: Policy, keys: int = 10) -> list[str]:
        out = [self.heading(policy)]
        for _, rows in self.tables(keys):
            out += ["", *markdown(rows)]
        return out


def decision_line(scored: Scored) -> str:
    """One output line: what was decided for one request, and why."""
    d = scored.decision
    return json.dumps({"ts": scored.record.ts, "key_id": d.key_id, "tenant": d.tenant,
                       "action": scored.action, "status": scored.status,
                       "reason": scored.reason, "score": round(scored.score.total, 1),
                       "reasons": scored.score.reasons(), "would": scored.would,
                       "signals": list(d.signals)}, separators=(",", ":"))


async def replay_file(records: Iterable[RequestRecord], policy: Policy, store: Store,
                      pepper: bytes, out: IO[str] | None, progress: IO[str] | None,
                      locate: Locate | None = None,
                      timelines: Timelines | None = None) -> Summary:
    summary = Summary(timelines)
    started = last = time.perf_counter()
    try:
        async for scored in replay_scored(records, policy, store, pepper, locate=locate):
            summary.add(scored)
            if out is not None:
                out.write(decision_line(scored) + "\n")
            if progress is not None and summary.requests % 1000 == 0:
                now = time.perf_counter()
                if now - last >= PROGRESS_EVERY:
                    last = now
                    progress.write(f"\rreplayed {summary.requests:,} requests "
                                   f"({summary.requests / (now - started):,.0f}/s)")
                    progress.flush()
    finally:
        await store.close()
    summary.seconds = time.perf_counter() - started
    if progress is not None:
        progress.write(f"\rreplayed {summary.requests:,} requests in "
                       f"{summary.seconds:.1f} s\n")
    return summary

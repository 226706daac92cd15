"""Metrics across worker processes (``uvicorn --workers N``): prometheus_client's multiprocess
mode, fed off the hot path.

With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's own switch: an empty directory per
deployment, set before the server starts), each process still records every decision into
plain lists (lock-free, well under a microsecond); ``SharedExport.flush`` copies what changed
since its last flush into prometheus_client's per-process files, every second from a
background task and once more before each scrape. ``/metrics`` then answers for all workers
together, whichever one the scrape reaches: counters and histograms summed over processes,
the policy gauges per process (``pid`` label). Without the variable nothing here runs.
"""

from __future__ import annotations

import asyncio
import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gatekeeper.reasons import OK, REFUSALS

ENV = "PROMETHEUS_MULTIPROC_DIR"
_REASONS = (OK, *REFUSALS)
_OUTCOMES = ("allow", "refuse")


def shared_directory() -> str | None:
    """The multiprocess directory when prometheus_client is in multiprocess mode."""
    return os.environ.get(ENV) or os.environ.get(ENV.lower()) or None


class SharedExport:
    """This process's decision counts and latency histogram, mirrored into the shared files.
    ``decisions`` / ``latency`` / ``latency_sum`` are the ``Metrics`` lists, read only."""

    def __init__(self, decisions: list[int], latency: list[list[int]],
                 latency_sum: list[float], buckets: tuple[float, ...], directory: str) -> None:
        self.directory = directory
        self._decisions = decisions
        self._latency = latency
        self._latency_sum = latency_sum
        self._seen_decisions = [0] * len(decisions)
        self._seen_latency = [[0] * len(row) for row in latency]
        self._seen_sum = [0.0] * len(latency_sum)
        counter = Counter("gatekeeper_decisions",
                          "Decisions on protected requests, by outcome and reason.",
                          ("outcome", "reason"), registry=None)
        self._counters = [counter.labels("allow" if r is OK else "refuse", r.code)
                          for r in _REASONS]
        histogram = Histogram("gatekeeper_added_latency_seconds",
                              "Time gatekeeper spent deciding, before the app was called or "
                              "the refusal sent.", ("outcome",), registry=None, buckets=buckets)
        self._histograms = [histogram.labels(outcome) for outcome in _OUTCOMES]

    def flush(self) -> None:
        """Copy what was recorded since the last flush (plain reads: the loop thread records)."""
        for i, count in enumerate(self._decisions):
            delta = count - self._seen_decisions[i]
            if delta:
                self._counters[i].inc(delta)
                self._seen_decisions[i] = count
        for outcome, row in enumerate(self._latency):
            seen = self._seen_latency[outcome]
            child = self._histograms[outcome]
            for i, count in enumerate(row):
                if count != seen[i]:
                    # prometheus_client keeps a histogram's buckets per bucket in these files
                    # (summed over processes, made cumulative when collected): add the delta
                    child._buckets[i].inc(count - seen[i])
                    seen[i] = count
            total = self._latency_sum[outcome]
            if total != self._seen_sum[outcome]:
                child._sum.inc(total - self._seen_sum[outcome])
                self._seen_sum[outcome] = total

    async def run(self, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds until cancelled; the last flush on the way out."""
        try:
            while True:
                await asyncio.sleep(interval)
                self.flush()
        finally:
            self.flush()

    def process_ended(self) -> None:
        """Let the live per-process gauges of this process go (prometheus_client's rule)."""
        mark_process_dead(os.getpid(), self.directory)  # type: ignore[no-untyped-call]

    def exposition(self) -> bytes:
        """Every process's metrics, read from the shared directory (after this one's flush)."""
        self.flush()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

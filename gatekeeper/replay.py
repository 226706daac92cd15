"""Replay: recorded requests through the same pipeline as the middleware, on recorded time.

A record is one request as a client sent it (JSON lines, one object each): ``ts`` (unix
seconds), ``client_ip``, ``method``, ``path``, ``headers`` (lower-case names; the credential
as the client sent it), and optionally ``root_path``, ``body``, ``usage`` and
``duration_ms`` (read by later stages: limits and the resale score). Time comes from the
records through a ``ManualClock``: nothing sleeps, and the same file always gives the same
decisions. Traffic files hold credentials: treat them as secrets.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from gatekeeper.admission import admit, body_facts
from gatekeeper.charge import AnyCharge
from gatekeeper.clock import ManualClock
from gatekeeper.decision import BLOCK, Decision
from gatekeeper.errors import ConfigError
from gatekeeper.pipeline import INVALID_TARGET, evaluate, prepare, route
from gatekeeper.policy.model import Policy
from gatekeeper.reasons import Refusal
from gatekeeper.runtime import Runtime
from gatekeeper.store.base import Store
from gatekeeper.usage import Usage, parse_usage


class RequestRecord(NamedTuple):
    ts: float
    client_ip: str | None
    method: str
    path: str
    headers: tuple[tuple[bytes, bytes], ...]
    root_path: str = ""
    body: Any = None
    usage: Mapping[str, Any] | None = None
    duration_ms: float | None = None

    @classmethod
    def from_dict(cls, data: object, where: str = "record") -> RequestRecord:
        """A record from one parsed JSON object; a ConfigError names the field that is wrong."""
        if not isinstance(data, Mapping):
            raise ConfigError(where, "(not an object)", "must be a JSON object")
        ts = data.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or \
                not math.isfinite(ts) or not 0 <= ts < 1e11:
            raise ConfigError(f"{where}.ts", ts, "must be unix seconds")
        fields: dict[str, str] = {}
        for name in ("method", "path", "client_ip", "root_path"):
            value = data.get(name, "" if name == "root_path" else None)
            if value is None and name == "client_ip":
                continue
            if not isinstance(value, str) or len(value) > 8192:
                raise ConfigError(f"{where}.{name}", "(value)", "must be a string")
            fields[name] = value
        raw = data.get("headers") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}.headers", "(value)", "must map names to strings")
        headers = []
        for name, value in raw.items():
            values = value if isinstance(value, list) else [value]
            for item in values:
                if not isinstance(name, str) or not isinstance(item, str):
                    raise ConfigError(f"{where}.headers", "(value)", "must map names to strings")
                headers.append((name.lower().encode("latin-1", "replace"),
                                item.encode("latin-1", "replace")))
        return cls(float(ts), fields.get("client_ip"), fields["method"], fields["path"],
                   tuple(headers), fields.get("root_path", ""), data.get("body"),
                   data.get("usage"), data.get("duration_ms"))


def read_records(lines: Iterable[str]) -> Iterator[RequestRecord]:
    """Records from JSON lines; blank lines are skipped, a bad line is named by its number."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise ConfigError(f"line {number}", "(text)", "is not JSON") from None
        yield RequestRecord.from_dict(data, f"line {number}")


async def decide_record(runtime: Runtime, record: RequestRecord,
                        clock: ManualClock) -> tuple[Decision, AnyCharge | None]:
    """One recorded request, decided exactly as the middleware decides it live, with the
    charge its limits took (to be settled when the recorded request ended)."""
    clock.set(record.ts)
    now, mono = clock.now(), clock.monotonic()
    below = route(runtime, record.path, record.root_path)
    if below == "":
        raise ConfigError("path", record.path, "is not a protected path under this policy")
    if below is None:
        return INVALID_TARGET, None
    peer = None if record.client_ip is None else (record.client_ip, 0)
    remembered, scan, key = prepare(runtime, list(record.headers), peer, below, now, mono)
    if remembered is not None:
        decision, admission = remembered.decision, remembered.admission
    else:
        decision, _, admission = await evaluate(runtime, scan, key, record.method, record.path,
                                                below, peer, now, mono)
    if admission is None:
        return decision, None
    estimate, model = 0, ""
    if admission.reads_body:
        headers = dict(record.headers)
        found = body_facts(admission, _body(record.body), headers.get(b"content-type"),
                           record.path)
        if isinstance(found, Refusal):
            return decision._replace(reason=found.reason, action=BLOCK,
                                     detail=found.detail), None
        estimate, model = found.tokens, found.model or ""
    if admission.limits.empty:
        return decision, None
    return await admit(runtime.counters, clock, admission, decision, now, estimate, model)


def _body(recorded: Any) -> bytes:
    """A record's body: text as UTF-8, a JSON value re-encoded, nothing as empty."""
    if recorded is None:
        return b""
    if isinstance(recorded, str):
        return recorded.encode()
    return json.dumps(recorded).encode()


async def replay(records: Iterable[RequestRecord], policy: Policy, store: Store, pepper: bytes,
                 clock: ManualClock | None = None) -> list[Decision]:
    """Decide every protected request of ``records`` in order; unprotected ones are skipped
    (the middleware passes them through without a decision). Limits count on a fresh memory
    counter store: a request holds its concurrency slot for its ``duration_ms`` (0 when
    absent) and its token reservation is corrected with its recorded ``usage``."""
    return [decision async for _, decision in replay_each(records, policy, store, pepper, clock)]


async def replay_each(records: Iterable[RequestRecord], policy: Policy, store: Store,
                      pepper: bytes, clock: ManualClock | None = None
                      ) -> AsyncIterator[tuple[RequestRecord, Decision]]:
    """As ``replay``, one (record, decision) pair at a time, for callers that look at each
    request as it is decided (the resale score, progress)."""
    clock = clock or ManualClock()
    runtime = Runtime(policy, store, pepper, clock)
    ending: list[tuple[float, int, AnyCharge, Usage | None]] = []  # a heap by end time
    for number, record in enumerate(records):
        if runtime.routes.answer(record.path, record.root_path) == "":
            continue
        while ending and ending[0][0] <= record.ts:
            end, _, done, usage = heapq.heappop(ending)
            await done.finish(usage, end)
        decision, charge = await decide_record(runtime, record, clock)
        yield record, decision
        if charge is not None:
            end = record.ts + (record.duration_ms or 0) / 1000
            heapq.heappush(ending, (end, number, charge, _usage(record.usage)))
    for end, _, charge, usage in sorted(ending):
        await charge.finish(usage, end)


def _usage(recorded: Mapping[str, Any] | None) -> Usage | None:
    return None if recorded is None else parse_usage({"usage": recorded})

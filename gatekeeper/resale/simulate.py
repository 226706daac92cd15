"""``gatekeeper simulate``: labelled synthetic traffic through the scored replay, measured.

Per scenario: precision (of the requests it flagged or worse, the share that were abuse),
recall (of the abuse requests, the share flagged or worse), false-positive rate (of the
legitimate requests, the share flagged or worse) and time to detect (per key, from its first
abuse request to the first one flagged or worse; the median over the scenario's keys).
Detection runs one request late, as on the hot path, so a key's first abusive request is
never caught.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.decision import ALLOW, BLOCK, SUSPEND
from gatekeeper.geo.location import Location, network_group
from gatekeeper.key_admin import create_key
from gatekeeper.networks import IPAddr
from gatekeeper.policy.load import compile_policy
from gatekeeper.policy.model import Policy
from gatekeeper.replay import RequestRecord
from gatekeeper.resale.report import Timelines, markdown
from gatekeeper.resale.scenarios import ABUSE, START, Traffic, World, generate
from gatekeeper.resale.scored import replay_scored
from gatekeeper.store.base import Store
from gatekeeper.store.memory import MemoryStore

PEPPER = b"gatekeeper-simulate-pepper-not-a-secret-0123456789"


def simulation_policy(traffic: list[Traffic], mode: str = "enforce") -> dict[str, Any]:
    """One tenant per scenario, no rules but the score (every request passes the pipeline)."""
    return {"routes": {"protect": ["/v1/*"]}, "resale": {"mode": mode},
            "tenants": {t.tenant: {} for t in traffic}}


@dataclass
class Outcome:
    """What happened to one scenario's requests."""

    scenario: str
    abusive: bool
    keys: int = 0
    legit: int = 0
    legit_flagged: int = 0
    legit_refused: int = 0
    """Legitimate requests blocked or suspended (by the score)."""
    abuse: int = 0
    abuse_flagged: int = 0
    detect_seconds: list[float] = field(default_factory=list)
    undetected_keys: int = 0

    @property
    def precision(self) -> float | None:
        flagged = self.legit_flagged + self.abuse_flagged
        return self.abuse_flagged / flagged if flagged and self.abusive else None

    @property
    def recall(self) -> float | None:
        return self.abuse_flagged / self.abuse if self.abuse else None

    @property
    def false_positive_rate(self) -> float:
        return self.legit_flagged / self.legit if self.legit else 0.0

    @property
    def median_detect(self) -> float | None:
        if not self.abusive:
            return None
        if self.undetected_keys * 2 >= self.keys:
            return float("inf")
        times = self.detect_seconds + [float("inf")] * self.undetected_keys
        return statistics.median(times)


async def prepare(seed: int, keys_per_scenario: int = 3, store: Store | None = None
                  ) -> tuple[list[Traffic], World, Policy, Store]:
    """The traffic, its world, its policy and a store (memory unless given) holding one key
    per traffic, each record's credential header filled in."""
    traffic, world = generate(seed, keys_per_scenario)
    policy = compile_policy(simulation_policy(traffic))
    store = store if store is not None else MemoryStore()
    for t in traffic:
        key, _ = await create_key(store, PEPPER, policy, t.tenant, START - 3600)
        for record, _label in t.requests:
            headers = record["headers"]
            for name in ("authorization", "api-key"):
                if name in headers:
                    headers[name] = f"Bearer {key}" if name == "authorization" else key
    return traffic, world, policy, store


def ordered(traffic: list[Traffic]) -> list[dict[str, Any]]:
    """Every request of every key, by time (stable: a key's own order is kept)."""
    merged = [record for t in traffic for record, _ in t.requests]
    merged.sort(key=lambda r: r["ts"])
    return merged


def locator(world: World) -> Any:
    def locate(addr: IPAddr) -> Location:
        return world.locate(network_group(addr))

    return locate


async def run(seed: int, keys_per_scenario: int = 3) -> tuple[list[Outcome], int]:
    """Generate, replay with the score, measure: (outcomes per scenario, requests)."""
    traffic, world, policy, store = await prepare(seed, keys_per_scenario)
    return await measure(traffic, world, policy, store)


async def measure(traffic: list[Traffic], world: World, policy: Policy, store: Store,
                  timelines: Timelines | None = None) -> tuple[list[Outcome], int]:
    """Replay prepared traffic with the score and measure it per scenario; ``timelines``
    collects every key's scores for the report."""
    records = ordered(traffic)
    outcomes = {t.scenario: Outcome(t.scenario, t.abusive) for t in traffic}
    starts: dict[str | None, float] = {}
    detected: dict[str | None, float] = {}
    abusive_keys: dict[str | None, str] = {}
    scored = replay_scored((RequestRecord.from_dict(r) for r in records), policy, store,
                           PEPPER, locate=locator(world))
    for meta, result in zip(_labels(records), [s async for s in scored], strict=True):
        scenario, label = meta
        out = outcomes[scenario]
        flagged = result.action != ALLOW
        key = result.decision.key_id
        if timelines is not None and key is not None:
            timelines.add(key, scenario, result.record.ts, result.score.total, result.action)
            if label == ABUSE:
                timelines.mark(key, result.record.ts, "first abuse")
        if label == ABUSE:
            out.abuse += 1
            out.abuse_flagged += flagged
            starts.setdefault(key, result.record.ts)
            abusive_keys[key] = scenario
            if flagged:
                detected.setdefault(key, result.record.ts)
        else:
            out.legit += 1
            out.legit_flagged += flagged
            out.legit_refused += result.action in (BLOCK, SUSPEND)
    for t in traffic:
        outcomes[t.scenario].keys += 1
    for key, scenario in abusive_keys.items():
        if key in detected:
            outcomes[scenario].detect_seconds.append(detected[key] - starts[key])
        else:
            outcomes[scenario].undetected_keys += 1
    return list(outcomes.values()), len(records)


def _labels(records: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for record in records:
        yield record["scenario"], record["label"]


def rows(outcomes: list[Outcome]) -> list[list[str]]:
    """The per-scenario table: a header row, then one row per scenario."""
    out = [["scenario", "kind", "keys", "requests", "abuse", "precision", "recall", "FP rate",
            "median time to detect", "legit blocked/suspended"]]
    for o in outcomes:
        detect = o.median_detect
        out.append([o.scenario, "abuse" if o.abusive else "legitimate", str(o.keys),
                    str(o.legit + o.abuse), str(o.abuse), _pct(o.precision), _pct(o.recall),
                    _pct(o.false_positive_rate),
                    "-" if detect is None else "never" if detect == float("inf")
                    else f"{detect:.0f} s", str(o.legit_refused)])
    return out


def table(outcomes: list[Outcome]) -> list[str]:
    """The per-scenario table, as Markdown rows."""
    return markdown(rows(outcomes))


def verdict(outcomes: list[Outcome]) -> list[str]:
    """The issue's targets, each with its measured value and whether it is met."""
    abuse = [o for o in outcomes if o.abusive]
    legit = [o for o in outcomes if not o.abusive]
    worst_recall = min((o.recall or 0.0) for o in abuse)
    worst_detect = max((o.median_detect or 0.0) for o in abuse)
    refused = sum(o.legit_refused for o in legit)
    flagged = sum(o.legit_flagged for o in legit) / max(1, sum(o.legit for o in legit))
    checks = [
        (f"every abuse scenario recall >= 95% (lowest {worst_recall:.1%})",
         worst_recall >= 0.95),
        (f"median time to detect <= 60 s (slowest {worst_detect:.0f} s)", worst_detect <= 60),
        (f"no legitimate request blocked or suspended ({refused})", refused == 0),
        (f"flag rate on legitimate keys <= 1% ({flagged:.2%})", flagged <= 0.01),
    ]
    return [f"{'met' if ok else 'MISSED'}: {text}" for text, ok in checks]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


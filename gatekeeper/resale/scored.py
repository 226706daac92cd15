"""Replay with the resale score: every decided request also feeds its key's state, and the
score drives the graduated action exactly as the hot path will, one request late.

For each request of a known key (allowed or refused: a key checker's 400s count too), the
action comes from the key's state *before* the request (what the previous answer returned:
no extra round trip on the hot path), scored at the request's time; then the request is
counted. Requests that name no known key feed nothing: a flood of forged keys costs no state.

Under ``mode: enforce`` an allowed request is flagged (passes, marked), throttled (passes;
tighter limits are the hot path's), blocked (403 ``resale_suspected``) or suspends its key
(401 ``key_suspended`` for this and every later request of the replay; the store is never
written). ``shadow`` and ``off`` change nothing: the score and what it would do are reported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import NamedTuple

from gatekeeper.clock import ManualClock
from gatekeeper.decision import Decision
from gatekeeper.facts import FactReader
from gatekeeper.geo.location import UNKNOWN, Location
from gatekeeper.networks import IPAddr
from gatekeeper.policy.model import Policy
from gatekeeper.replay import RequestRecord, replay_each
from gatekeeper.resale.event import event_for
from gatekeeper.resale.score import Score
from gatekeeper.resale.scorer import Scorer
from gatekeeper.store.base import Store

Locate = Callable[[IPAddr], Location]


class Scored(NamedTuple):
    record: RequestRecord
    decision: Decision
    """The decision after the score (``act``)."""
    action: str
    """What was done: the pipeline's refusal, else the score's action under ``enforce``."""
    status: int
    reason: str
    score: Score
    """The score the action came from (the key's state before this request)."""
    would: str
    """What the score asks for, whatever the mode."""


def policy_locator(policy: Policy) -> Locate:
    """Where a client address is, by the policy's geo chain (files, else the embedded
    default); opened on first use."""
    from gatekeeper.geo.resolver import resolver_from_policy

    resolver = None

    def locate(addr: IPAddr) -> Location:
        nonlocal resolver
        if resolver is None:
            resolver = resolver_from_policy(policy.geo)
        return resolver.lookup(addr)

    return locate


def client_of(reader: FactReader, record: RequestRecord) -> IPAddr | None:
    """The record's client as the middleware resolves it (forwarding headers from a trusted
    proxy included), not merely the peer address."""
    peer = None if record.client_ip is None else (record.client_ip, 0)
    facts = reader.facts(reader.scan(list(record.headers)), record.method, record.path,
                         record.path, peer)
    return facts.client


async def replay_scored(records: Iterable[RequestRecord], policy: Policy, store: Store,
                        pepper: bytes, clock: ManualClock | None = None,
                        locate: Locate | None = None) -> AsyncIterator[Scored]:
    """Every protected request of ``records``, decided by ``replay`` and scored."""
    locate = locate or policy_locator(policy)
    scorer = Scorer(policy, force_shadow=True)
    reader = FactReader(policy)
    async for record, decision in replay_each(records, policy, store, pepper, clock):
        acted, before, would = scorer.judge(decision, record.ts)
        if decision.key_id is not None and decision.principal is not None:
            agent = dict(record.headers).get(b"user-agent")
            addr = client_of(reader, record)
            scorer.count(event_for(scorer.settings(decision.tenant), record.ts,
                                   decision.key_id, addr,
                                   UNKNOWN if addr is None else locate(addr),
                                   record.method, record.path,
                                   None if agent is None else agent.decode("latin-1"),
                                   record.body, decision.reason.code,
                                   (record.duration_ms or 0) / 1000), decision.tenant)
        yield Scored(record, acted, acted.action, acted.reason.status, acted.reason.code,
                     before, would)

"""The request pipeline, stage by stage, as plain functions over plain data (no ASGI here).

    target -> route -> scan headers -> [decision record?] -> facts -> authenticate -> decide
           -> [geo: countries, travel]
           -> [admission: body facts, plan, one store call] -> [settle] -> observe

The middleware and ``replay`` call these same functions, so a recorded request is decided
exactly as it was live. Bracketed stages run only when a compiled rule needs them: a
decision record (an allowed answer for the same raw credential, client and tenant inputs,
still fresh) skips everything between the scan and the admission; the admission
(``admission.py``: limits charged in one store call, settled when the response ends) runs
only for credentials whose tenant has limits, so a tenant without them never pays for it.
"""

from __future__ import annotations

import logging
from typing import Any

from gatekeeper import reasons
from gatekeeper.admission import Admission, admission_for
from gatekeeper.decision import Decision, decide
from gatekeeper.facts import Headers, RequestFacts, Scan
from gatekeeper.principal import Principal
from gatekeeper.runtime import DECISION_RECORDS, ROUTE_MEMO_SIZE, DecisionRecord, Runtime

log = logging.getLogger("gatekeeper")

MISS: Any = object()
"""``route_memo.get(key, MISS)``: a target not seen yet."""
INVALID_TARGET = Decision(reasons.REQUEST_TARGET_INVALID,
                          detail="request-target names no path")
_INTERNAL = Decision(reasons.INTERNAL_ERROR, detail="exception while deciding")


def route_key(path: str, root_path: str) -> Any:
    return (root_path, path) if root_path else path


def route(rt: Runtime, path: str, root_path: str) -> str | None:
    """'' when the target is public, the path below the mount when it is protected, None when
    it names no path. Remembered per target: clients repeat theirs."""
    answer = rt.routes.answer(path, root_path)
    memo = rt.route_memo
    if len(memo) >= ROUTE_MEMO_SIZE:
        memo.clear()  # O(1) amortised; a flood of distinct targets only costs recomputing
    memo[route_key(path, root_path)] = answer
    return answer


def record_key(rt: Runtime, scan: Scan, peer: object, below: str) -> tuple[Any, ...] | None:
    """What an allowed decision depends on, as raw bytes: the credential headers, the peer
    host, the forwarding, tenant and CDN country headers (and the path when it names the
    tenant): the same key is the same client in the same place. None when the peer is not
    the (host, port) tuple servers send: such requests are not reused."""
    if type(peer) is not tuple:
        if peer is not None:
            return None
        host = None
    else:
        host = peer[0]
    found, forwarded, tenant = scan[0], scan[1], scan[2]
    key: tuple[Any, ...] = (
        found[0] if len(found) == 1 else tuple(found), host,
        None if forwarded is None else tuple(forwarded),
        None if tenant is None else tuple(tenant), scan[3], scan[7])
    if rt.keyed_by_path:
        key += (below,)
    return key


def prepare(rt: Runtime, headers: Headers, peer: object, below: str, now: float,
            mono: float) -> tuple[DecisionRecord | None, Scan, tuple[Any, ...] | None]:
    """Scan the headers and reuse the record of an earlier identical request while it may
    still be trusted: (that record or None, the scan, the record key)."""
    scan = rt.reader.scan(headers)
    key = record_key(rt, scan, peer, below)
    if key is not None:
        record = rt.decisions.get(key)
        if record is not None and mono < record.fresh_until and now < record.expires_at:
            return record, scan, key
    return None, scan, key


async def evaluate(rt: Runtime, scan: Scan, key: tuple[Any, ...] | None, method: str,
                   path: str, below: str, peer: object, now: float,
                   mono: float) -> tuple[Decision, RequestFacts | None, Admission | None]:
    """Every stage from facts to the decision and what the credential still has to pass per
    request (its admission: limits); never raises (fails closed)."""
    facts: RequestFacts | None = None
    try:
        facts = rt.reader.facts(scan, method, path, below, peer)
        auth = None
        if facts.problem is None and facts.credential is not None:
            auth = await rt.authenticator.authenticate(facts.credential, now)
        decision = decide(facts, auth, rt.policy, now)
        if decision.allowed:
            rules = rt.geo.rules_for(decision.principal)  # None unless a geo rule applies
            if rules is not None:
                decision = await rt.geo.check(rules, decision, facts.client, scan[7],
                                              facts.peer_trusted, now)
        admission = admission_for(rt.policy, decision, facts, rt.budget_watch) \
            if decision.allowed else None
    except Exception:
        log.exception("gatekeeper failed to decide; refusing (fail closed)")
        return _INTERNAL, facts, None
    if decision.allowed and key is not None and facts.credential is not None:
        trusted = rt.authenticator.trusted_for(facts.credential)
        if trusted > 0:
            _remember(rt, key, decision, mono + trusted, admission)
    return decision, facts, admission


def _remember(rt: Runtime, key: tuple[Any, ...], decision: Decision, fresh_until: float,
              admission: Admission | None) -> None:
    records = rt.decisions
    if len(records) >= DECISION_RECORDS and key not in records:
        records.popitem(last=False)  # O(1): a plain dict's next(iter()) slows as it churns
    principal: Principal | None = decision.principal
    expires = principal.expires_at if principal is not None else None
    records[key] = DecisionRecord(decision, fresh_until,
                                  float("inf") if expires is None else expires, admission)

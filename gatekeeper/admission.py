"""Admission: what an allowed credential still has to pass on each request, and its charge.

An ``Admission`` is compiled once per decision record (the credential's tenant limits and its
part of every storage key), so a reused record builds nothing. Per request, ``admit`` builds
the plan, charges it in ONE store call and turns the answers into the final decision; the
``Charge`` it returns is settled exactly once when the response ends (slots released, the
token reservation reconciled with the upstream's usage). Credentials of tenants without limits
get no Admission and never reach this module.

Nothing is charged before the credential is verified: an Admission exists only for an
allowed decision, so a forged or unknown key never costs a victim's quota.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Final

from gatekeeper import reasons
from gatekeeper.charge import AnyCharge, Charge, LocalCharge
from gatekeeper.clock import Clock
from gatekeeper.decision import BLOCK, Decision, carrying, is_allowed
from gatekeeper.errors import StoreError
from gatekeeper.facts import RequestFacts, Scan
from gatekeeper.limits.answer import Report, outcome
from gatekeeper.limits.overrides import narrow
from gatekeeper.limits.plan import (
    CONCURRENCY,
    EMPTY_PLAN,
    QUOTA,
    REQUESTS,
    TOKENS,
    Counter,
    CounterAnswer,
    Plan,
    build_plan,
    credential_part,
)
from gatekeeper.limits.spend import NO_PRICES, Prices, spend_of
from gatekeeper.networks import IPAddr
from gatekeeper.policy.limits import TenantLimits
from gatekeeper.policy.model import Policy
from gatekeeper.policy.request_policy import NO_REQUEST_RULES, RequestPolicy
from gatekeeper.reasons import Reason, Refusal
from gatekeeper.request_body import (
    BODY_FACTS,
    BodyFacts,
    quick_read,
    read_request,
    with_include_usage,
)
from gatekeeper.responder import Responder, is_whole
from gatekeeper.store.counters import CounterStore, EmbeddedCounterStore
from gatekeeper.store.memory_counters import MemoryCounterStore
from gatekeeper.store.memory_plan import Compiled, compile_plan
from gatekeeper.token_estimate import path_completes
from gatekeeper.types import Receive, Scope, Send

log = logging.getLogger("gatekeeper")


class Admission:
    """One credential's limits from one client, compiled for its decision record. The record
    key fixes the client address, so the plan is built once and reused until its first quota
    window ends; a request only puts its own token and spend estimates in."""

    __slots__ = ("client", "completes", "credential", "limits", "local", "local_priced",
                 "plan", "plan_until", "priced", "prices", "quick_estimate", "reads_body",
                 "report", "reserves", "rules", "spend_prices", "tenant", "watch")

    def __init__(self, tenant: str, credential: str, client: IPAddr | None,
                 limits: TenantLimits, prices: Prices = NO_PRICES,
                 rules: RequestPolicy = NO_REQUEST_RULES, watch: BudgetWatch | None = None
                 ) -> None:
        self.watch = watch
        """Called with (admission, plan, answers) after each charge: the owner's webhooks
        (``Notifier.budgets``); None, the common case, when the tenant has no target."""
        self.tenant = tenant
        self.credential = credential
        self.client = client
        self.limits = limits
        self.prices = prices
        self.rules = rules
        self.reserves = limits.charges_tokens or limits.charges_spend
        """Tokens or spend are reserved per request and reconciled with the usage."""
        self.reads_body = rules.needs_body or self.reserves
        """The body is read first: a rule checks it, or it gives the estimate to reserve."""
        self.quick_estimate = limits.charges_tokens and not limits.charges_spend and \
            not rules.needs_json
        """Only a token estimate is wanted: a small body need not be parsed for it."""
        self.completes: dict[str, bool] = {}
        """Per path: whether it generates tokens (``path_completes``), for the estimate."""
        self.plan: Plan = EMPTY_PLAN
        """Built once per quota window, every cost at its request-count (tokens and spend at 0)."""
        self.plan_until = -math.inf
        self.priced: tuple[int, ...] = ()
        """Where the plan's token and spend counters are: their cost is this request's."""
        self.report = Report(EMPTY_PLAN)
        self.local: Compiled | None = None
        """The plan compiled for the memory store's ``take``: None for other stores, for a
        watched budget (it reads every answer) and for plans ``take`` leaves to ``apply``."""
        self.local_priced: Compiled = ()
        """``local``'s token and spend counters: what a settle corrects."""
        self.spend_prices = prices if limits.charges_spend else None

    def renew(self, now: float, counters: CounterStore | None = None) -> None:
        """Build the plan of this quota window (and compile it for ``counters``)."""
        plan = build_plan(self.tenant, self.credential, self.client, self.limits, 0,
                          now=now, spend=0)
        self.plan = plan
        self.plan_until = min((c.expires for c in plan if c.expires), default=math.inf)
        self.priced = tuple(i for i, c in enumerate(plan) if c.unit != REQUESTS)
        self.report = Report(plan)
        local = compile_plan(plan) if isinstance(counters, MemoryCounterStore) and \
            self.watch is None else None
        self.local = local
        self.local_priced = () if local is None else tuple(c for c in local if c.unit)

    def plan_for(self, now: float, estimate: int = 0, spend: int = 0) -> Plan:
        if now >= self.plan_until:
            self.renew(now)
        if not self.priced:
            return self.plan
        priced = list(self.plan)
        for i in self.priced:
            c = priced[i]
            priced[i] = _new(Counter, (*c[:5], estimate if c[6] == TOKENS else spend, *c[6:]))
        return tuple(priced)


_new: Final = tuple.__new__
BudgetWatch = Callable[[Admission, Plan, Sequence[CounterAnswer]], None]


def admission_for(policy: Policy, decision: Decision, facts: RequestFacts,
                  watch: BudgetWatch | None = None) -> Admission | None:
    """None when the credential's tenant has nothing left to check (the common case). A key's
    own limits narrow its tenant's, once per decision record."""
    principal = decision.principal
    tenant = policy.tenants.get(decision.tenant or "")
    if principal is None or tenant is None:
        return None
    limits = narrow(tenant.limits, principal.limits)
    if limits.empty and tenant.request.empty:
        return None
    return Admission(principal.tenant, credential_part(principal.kind, principal.key_id),
                     facts.client, limits, policy.prices, tenant.request,
                     watch if tenant.notify is not None else None)


async def admit_request(counters: CounterStore, clock: Clock, admission: Admission,
                        decision: Decision, scope: Scope, receive: Receive, send: Send,
                        scan: Scan, now: float) -> tuple[Decision, Responder | None,
                                                         AnyCharge | None]:
    """Every stage after an allowed decision: the body (read once, bounded, checked against
    the request policy, estimated), then the limits. Answers the final decision, the
    Responder to run the app through (None when nothing wraps it) and the charge to settle.
    Raises ``ClientDisconnected`` when the client leaves while sending its body."""
    http = scope["type"] == "http"
    responder: Responder | None = None
    estimate, model = 0, ""
    if admission.reads_body and http:
        rules = admission.rules
        declared = scan[5]  # content-length: a number, else 0 (the read is bounded anyway)
        if declared is not None and len(declared) >= rules.max_body_digits and \
                declared.isdigit() and len(declared) < 19 and \
                int(declared) > rules.max_body_bytes:
            return _refused(decision, reasons.BODY_TOO_LARGE,
                            f"content-length {int(declared)}"), None, None
        responder = Responder(receive, send, watch_usage=admission.reserves)
        message = await receive()  # read_body's usual case needs no coroutine of its own
        body = responder.whole_body(message, rules.max_body_bytes) if is_whole(message) \
            else await responder.read_body(rules.max_body_bytes, message)
        if body is None:
            return _refused(decision, reasons.BODY_TOO_LARGE,
                            f"over {rules.max_body_bytes} bytes"), None, None
        found = body_facts(admission, body, scan[4], scope["path"])
        if isinstance(found, Refusal):
            return _refused(decision, found.reason, found.detail), None, None
        scope[BODY_FACTS] = found  # for the resale stage's body signals
        estimate, model = found[6] + found[7], found[0] or ""  # tokens, model
        if rules.ask_usage and found.stream and not found.include_usage:
            rewritten = with_include_usage(body, found.document)
            if rewritten is not None:
                responder.replay_instead(rewritten)
                scope["headers"] = [*(h for h in scope["headers"] if h[0] != b"content-length"),
                                    (b"content-length", str(len(rewritten)).encode())]
    charge = None
    if not admission.limits.empty:
        if counters.embedded:
            embedded: EmbeddedCounterStore = counters  # type: ignore[assignment]  # it said so
            decision, charge = admit_now(embedded, clock, admission, decision, now, estimate,
                                         model)
        else:
            decision, charge = await admit(counters, clock, admission, decision, now,
                                           estimate, model)
        if not is_allowed(decision):
            return decision, None, None
    if http and (responder is not None or charge is not None or decision.headers):
        if responder is None:
            responder = Responder(receive, send, watch_usage=admission.reserves)
        responder.arm(decision.headers, None if charge is None else charge.settle,
                      admission.report.names)
    return decision, responder, charge


def body_facts(admission: Admission, body: bytes, content_type: bytes | None,
               path: str) -> BodyFacts | Refusal:
    """The body checked against the request policy, with the estimate limits reserve."""
    completes = admission.completes.get(path)
    if completes is None:
        completes = path_completes(path)
        if len(admission.completes) < 64:  # a record's paths: a handful
            admission.completes[path] = completes
    if admission.quick_estimate:
        found = quick_read(body, admission.rules.default_max_tokens, completes)
        if found is not None:
            return found
    return read_request(body, None if content_type is None else content_type.decode("latin-1"),
                        admission.rules, parse=admission.reserves, completes=completes)


def _refused(decision: Decision, reason: Reason, detail: str) -> Decision:
    return decision._replace(reason=reason, action=BLOCK, detail=detail, headers=())


def admit_plain(counters: CounterStore, clock: Clock, admission: Admission,
                decision: Decision, receive: Receive, send: Send, now: float,
                http: bool) -> tuple[Decision, Responder | None, AnyCharge | None]:
    """``admit_request`` for the common case, with no coroutine: the body is not needed and
    the counter store answers without I/O (``counters.embedded``)."""
    charge = None
    if not admission.limits.empty:
        # ``embedded`` said so: a local annotation costs nothing, cast() is a call
        embedded: EmbeddedCounterStore = counters  # type: ignore[assignment]
        decision, charge = admit_now(embedded, clock, admission, decision, now)
        if not is_allowed(decision):
            return decision, None, None
    if http and charge is not None:
        return decision, Responder(receive, send, headers=decision.headers,
                                   names=admission.report.names,
                                   watch_usage=admission.reserves, settle=charge.settle), charge
    return decision, None, charge


def admit_now(counters: EmbeddedCounterStore, clock: Clock, admission: Admission,
              decision: Decision, now: float, estimate: int = 0,
              model: str = "") -> tuple[Decision, AnyCharge | None]:
    """``admit`` on a store that answers without I/O."""
    if now >= admission.plan_until:
        admission.renew(now, counters)
    prices = admission.spend_prices
    spend = 0 if prices is None else spend_of(prices, model, estimate, 0)
    local = admission.local
    if local is not None:  # the memory store: a compiled plan, answered only when allowed
        memory: MemoryCounterStore = counters  # type: ignore[assignment]  # renew() checked
        costs = (1, estimate, spend)
        try:
            leases = memory.take(local, costs, now)
        except Exception as exc:
            return _store_failed(decision, exc), None
        if leases is not None:
            headers = admission.report.headers_of(local)
            allowed = carrying(decision, headers) if headers else decision
            if leases or admission.reserves:
                return allowed, LocalCharge(memory, clock, admission.local_priced, leases,
                                            costs, prices, model)
            return allowed, None
    plan = admission.plan_for(now, estimate, spend)
    try:
        answers = counters.apply_now(plan, now)
    except Exception as exc:
        return _store_failed(decision, exc), None
    return _conclude(counters, clock, admission, decision, plan, answers, model)


async def admit(counters: CounterStore, clock: Clock, admission: Admission, decision: Decision,
                now: float, estimate: int = 0,
                model: str = "") -> tuple[Decision, AnyCharge | None]:
    """The final decision after the limits (with its rate-limit headers) and the charge to
    settle when the response ends (None when there is nothing to give back or correct).
    ``estimate`` is the tokens reserved; ``model`` prices the spend reserved and settled."""
    if counters.embedded:
        embedded: EmbeddedCounterStore = counters  # type: ignore[assignment]  # it said so
        return admit_now(embedded, clock, admission, decision, now, estimate, model)
    plan = admission.plan_for(now, estimate, spend_of(admission.prices, model, estimate, 0)
                              if admission.limits.charges_spend else 0)
    try:
        answers = await counters.apply(plan, now)
    except Exception as exc:
        return _store_failed(decision, exc), None
    return _conclude(counters, clock, admission, decision, plan, answers, model)


STORE_LOG_INTERVAL: Final = 10.0
"""Seconds between two "limits not checked" lines: an outage refuses every limited request,
and a line each would flood the log (``gatekeeper_decisions_total`` counts every one)."""
_store_log: list[float] = [-math.inf, 0]
"""When the last line was written (monotonic) and how many refusals it has not told of."""


def _store_failed(decision: Decision, exc: Exception) -> Decision:
    at, untold = _store_log
    clock = time.monotonic()
    if clock - at >= STORE_LOG_INTERVAL:
        _store_log[0], _store_log[1] = clock, 0
        log.error("limits not checked, refusing (fail closed): %s%s", _cause(exc),
                  f" ({untold:.0f} more refused since the last line)" if untold else "")
    else:
        _store_log[1] = untold + 1
    return _refused(decision, reasons.STORE_UNAVAILABLE, "counter store unavailable")


def _conclude(counters: CounterStore, clock: Clock, admission: Admission, decision: Decision,
              plan: Plan, answers: Sequence[CounterAnswer],
              model: str) -> tuple[Decision, AnyCharge | None]:
    if admission.watch is not None:  # the tenant has a webhook target: budgets watched
        admission.watch(admission, plan, answers)
    for answer in answers:
        if not answer[0]:
            result = outcome(plan, answers)
            assert result.refused is not None
            return decision._replace(reason=result.reason, action=BLOCK,
                                     headers=result.headers,
                                     detail=describe(result.refused)), None
    headers, leases = admission.report.allowed(answers)
    allowed = carrying(decision, headers) if headers else decision
    if leases or admission.reserves:
        return allowed, Charge(counters, clock, plan, leases, admission.priced,
                               admission.spend_prices, model)
    return allowed, None


def _cause(exc: Exception) -> str:
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"


def describe(counter: Counter) -> str:
    """The audit line's name for a counter: scope, unit and limit, never a credential."""
    key = counter.key
    below_tag = key[key.index("}") + 2:]  # "all:rq:60/60" for the tenant, "k<id>:..." for a key
    scope = "client" if key.startswith("gk:{c:") else \
        "tenant" if below_tag.startswith("all:") else "key"
    if counter.kind == CONCURRENCY:
        return f"{scope} concurrency {counter.limit}"
    if counter.kind == QUOTA:
        return f"{scope} {counter.unit} quota {counter.limit}/{counter.period:g}s"
    return f"{scope} {counter.unit} {counter.limit}/{counter.period:g}s"

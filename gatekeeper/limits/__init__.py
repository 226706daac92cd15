"""The limit engine: plain data and pure functions, charged through one store call.

``build_plan`` (plan.py) lists the counters a request charges; ``CounterStore.apply``
(``gatekeeper/store/counters.py``) charges them all or none; ``outcome`` (answer.py) turns the
answers into the decision's reason and headers. ``gcra.py`` is the rate arithmetic.
"""

from gatekeeper.limits.answer import LimitOutcome, duration, outcome, reason_for
from gatekeeper.limits.gcra import GcraAnswer, gcra, refund, to_us
from gatekeeper.limits.plan import (
    CONCURRENCY,
    EMPTY_PLAN,
    QUOTA,
    RATE,
    REQUESTS,
    TOKENS,
    Counter,
    Plan,
    build_plan,
    client_part,
    credential_part,
)

__all__ = ["CONCURRENCY", "EMPTY_PLAN", "QUOTA", "RATE", "REQUESTS", "TOKENS", "Counter",
           "GcraAnswer", "LimitOutcome", "Plan", "build_plan", "client_part",
           "credential_part", "duration", "gcra", "outcome", "reason_for", "refund", "to_us"]

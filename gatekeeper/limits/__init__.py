"""The limit engine: plain data and pure functions, charged through one store call.

``build_plan`` (plan.py) lists the counters a request charges; ``CounterStore.apply``
(``gatekeeper/store/counters.py``) charges them all or none; ``outcome`` (answer.py) turns the
answers into the decision's reason and headers. ``gcra.py`` is the rate arithmetic,
``windows.py`` the UTC day and month of quotas, ``spend.py`` prices and spend (micro-dollars),
``overrides.py`` a key's own limits (``narrow``).
"""

from gatekeeper.limits.answer import LimitOutcome, duration, outcome, reason_for
from gatekeeper.limits.gcra import GcraAnswer, gcra, refund, to_us
from gatekeeper.limits.overrides import narrow
from gatekeeper.limits.plan import (
    CONCURRENCY,
    EMPTY_PLAN,
    QUOTA,
    RATE,
    REQUESTS,
    SPEND,
    TOKENS,
    Counter,
    Plan,
    build_plan,
    client_part,
    credential_part,
    settled_cost,
)
from gatekeeper.limits.spend import Prices, spend_of
from gatekeeper.limits.windows import Window, windows

__all__ = ["CONCURRENCY", "EMPTY_PLAN", "QUOTA", "RATE", "REQUESTS", "SPEND", "TOKENS", "Counter",
           "GcraAnswer", "LimitOutcome", "Plan", "Prices", "Window", "build_plan",
           "client_part", "credential_part", "duration", "gcra", "narrow", "outcome",
           "reason_for", "refund", "settled_cost", "spend_of", "to_us", "windows"]

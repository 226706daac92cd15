"""A compiled policy as plain, ordered data, and its fingerprint.

Two processes that load the same policy must agree on its fingerprint (the
``gatekeeper_policy_info`` metric shows whether every worker and pod runs the same one), and
``check-config --diff`` compares two policies field by field: both need the compiled policy
as data that does not depend on set order, hash seeds or object identity. Derived fields
(precomputed indexes, ``init=False``) and the store URL (it may hold a password) are left out;
so is ``source``, so the same policy at another path has the same fingerprint.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gatekeeper.networks import NetworkSet
from gatekeeper.policy.limits import Rate
from gatekeeper.policy.model import Policy
from gatekeeper.reasons import Reason

Plain = Any
"""JSON-like: None, bool, int, float, str, lists and str-keyed dicts of them."""
_LEFT_OUT = frozenset({"store", "source"})


def canonical(value: Any) -> Plain:
    """``value`` as JSON-like data: dataclasses by field, sets sorted, reasons by code."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Reason):
        return value.code
    if isinstance(value, Rate):
        return str(value)  # "60/60s": one value in a diff, not a limit and a period
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.init and f.repr and not f.name.startswith("_")
                and not (isinstance(value, Policy) and f.name in _LEFT_OUT)}
    if isinstance(value, Mapping):
        return {_key(k): canonical(v) for k, v in sorted(value.items(), key=lambda i: _key(i[0]))}
    if isinstance(value, set | frozenset):
        return sorted((canonical(v) for v in value), key=_order)
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, NetworkSet):
        return sorted(value.texts())
    if hasattr(value, "pattern"):  # a compiled glob or regex
        return str(value.pattern)
    return repr(value)


def fingerprint(policy: Policy) -> str:
    """16 hex digits of SHA-256 over the canonical policy: equal policies, equal prints."""
    text = json.dumps(canonical(policy), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key(key: object) -> str:
    found = canonical(key)
    return found if isinstance(found, str) else json.dumps(found, sort_keys=True)


def _order(value: Plain) -> str:
    return json.dumps(value, sort_keys=True, default=str)

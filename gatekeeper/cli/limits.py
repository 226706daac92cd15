"""``gatekeeper limits show``: the limits in force for a key or a tenant, and where they count.

Shows the tenant's limits, the key's own override and the effective limits (the key's can only
narrow: one looser than its tenant's, after a policy change, is marked clamped), then the
storage keys the plan would charge now. The counters themselves live in the server: with the
embedded default in its process memory, where no other process can read them, so this says
so instead of printing numbers it cannot know.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gatekeeper import key_admin
from gatekeeper.errors import MISSING, ConfigError
from gatekeeper.limits.overrides import narrow, shown, widenings
from gatekeeper.limits.plan import Counter, build_plan, credential_part
from gatekeeper.networks import parse_ip
from gatekeeper.policy.limits import LimitSet, load_key_limits
from gatekeeper.policy.load import load_policy
from gatekeeper.policy.model import Policy
from gatekeeper.store import DEFAULT_STORE_URL, store_from_url

POLICY_ENV = "GATEKEEPER_POLICY"
COUNTERS_NOTE = ("counters (and spend so far): in the server process (memory store); this "
                 "command cannot read them, and neither can another worker. Shared counters "
                 "need the Redis store.")
_PLACEHOLDER = "192.0.2.0"
"""A documentation address standing in for "any client" in the per-client storage keys."""


def add_parser(commands: Any) -> None:
    limits = commands.add_parser("limits", help="show the limits in force for a key or tenant")
    sub = limits.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="tenant, key and effective limits; their storage keys")
    show.add_argument("key_id", nargs="?", help="a key id (or give --tenant)")
    show.add_argument("--tenant", help="show a tenant's limits instead of a key's")
    show.add_argument("--policy", default=os.environ.get(POLICY_ENV),
                      help=f"policy file (default: ${POLICY_ENV})")
    show.add_argument("--store", help="store URL, overriding the policy's")
    show.add_argument("--json", action="store_true", help="print JSON")


async def run(args: argparse.Namespace) -> int:
    if not args.policy:
        raise ConfigError("--policy", MISSING, f"is required (or set ${POLICY_ENV})")
    if (args.key_id is None) == (args.tenant is None):
        raise ConfigError("limits show", MISSING, "needs a KEY_ID or --tenant T (one of them)")
    policy = load_policy(args.policy)
    key_id, own, tenant = None, None, args.tenant
    if args.key_id is not None:
        store = store_from_url(args.store or policy.store or DEFAULT_STORE_URL,
                               "--store" if args.store else "store")
        try:
            record = await key_admin.get_key(store, args.key_id)
        finally:
            await store.close()
        key_id, tenant = record.key_id, record.tenant
        own = load_key_limits(record.limits) if record.limits else None
    view = limits_view(policy, tenant, key_id, own, time.time())
    print(json.dumps(view, indent=2) if args.json else "\n".join(_text(view)))
    return 0


def limits_view(policy: Policy, tenant: str, key_id: str | None, own: LimitSet | None,
                now: float) -> dict[str, Any]:
    """What ``limits show`` prints, as plain data."""
    found = policy.tenants.get(tenant)
    if found is None:
        raise ConfigError("tenant", tenant, f"is not a tenant in {policy.source}")
    limits = found.limits
    effective = narrow(limits, own)
    clamped = [name for name, _, _ in widenings(limits, own)] if own else []
    credential = credential_part("api_key", key_id or "<KEY_ID>")
    plan = build_plan(tenant, credential, parse_ip(_PLACEHOLDER), effective, now=now)
    return {
        "tenant": tenant, "key_id": key_id,
        "per_key": {"tenant": _fields(limits.per_key), "key": _fields(own),
                    "effective": _fields(effective.per_key), "clamped": clamped},
        "per_tenant": _fields(limits.per_tenant), "per_client": _fields(limits.per_client),
        "concurrency_lease": limits.lease,
        "storage_keys": [_counter(c) for c in plan],
        "counters": COUNTERS_NOTE,
    }


def _fields(limits: LimitSet | None) -> dict[str, str]:
    if limits is None:
        return {}
    return {f.name: shown(f.name, getattr(limits, f.name))
            for f in dataclasses.fields(LimitSet) if getattr(limits, f.name) is not None}


def _counter(c: Counter) -> dict[str, Any]:
    out = {"key": c.key.replace("{c:" + _PLACEHOLDER + "}", "{c:<client address>}"),
           "kind": c.kind, "unit": c.unit, "limit": c.limit, "period": c.period}
    if c.expires:
        out["until"] = datetime.fromtimestamp(c.expires, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if c.slice:
        out["lease"] = {"slice": c.slice, "ttl": c.ttl}  # lease mode (README "Lease mode")
    return out


def _text(view: dict[str, Any]) -> list[str]:
    who = f"key {view['key_id']} of tenant {view['tenant']}" if view["key_id"] else \
        f"tenant {view['tenant']} (each of its keys)"
    lines = [f"limits for {who}", ""]
    per_key = view["per_key"]
    names = [n for n in (f.name for f in dataclasses.fields(LimitSet))
             if any(n in per_key[c] for c in ("tenant", "key", "effective"))]
    if names:
        rows = [("per key", "tenant", "key", "effective")]
        rows += [(n, per_key["tenant"].get(n, "-"), per_key["key"].get(n, "-"),
                  per_key["effective"].get(n, "-")
                  + (" (key's clamped)" if n in per_key["clamped"] else "")) for n in names]
        lines += _table(rows)
    else:
        lines.append("per key: no limits")
    for scope in ("per_tenant", "per_client"):
        items = ", ".join(f"{k}={v}" for k, v in view[scope].items()) or "no limits"
        lines.append(f"{scope}: {items}")
    if view["per_key"]["clamped"]:
        lines.append("clamped: the key's own limit is looser than its tenant's (the policy "
                     "changed after it was set); the tenant's applies")
    lines += ["", "storage keys charged now:"]
    for c in view["storage_keys"] or [{"key": "(none: nothing is limited)"}]:
        detail = "" if "kind" not in c else \
            f"  {c['kind']} {c['unit']} {shown('_' + c['unit'], c['limit'])}" + \
            (f" until {c['until']}" if "until" in c else f"/{c['period']:g}s")
        if "lease" in c:
            detail += f"  lease mode: slice {c['lease']['slice']}, ttl {c['lease']['ttl']:g}s"
        lines.append(f"  {c['key']}{detail}")
    lines += ["", view["counters"]]
    return lines


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]

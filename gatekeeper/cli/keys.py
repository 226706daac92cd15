"""``gatekeeper keys ...``: issue and manage keys in the policy's store. Secrets print once."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from gatekeeper import key_admin, key_events
from gatekeeper.errors import MISSING, ConfigError
from gatekeeper.keys import KeyRecord
from gatekeeper.limits.overrides import FLAGS, apply_flags, flag_name, shown
from gatekeeper.policy.keys import load_pepper
from gatekeeper.policy.load import load_policy
from gatekeeper.policy.model import Policy
from gatekeeper.policy.notify import KEY_REVOKED, KEY_SUSPENDED
from gatekeeper.principal import KeyStatus
from gatekeeper.store import DEFAULT_STORE_URL, Store, store_from_url

POLICY_ENV = "GATEKEEPER_POLICY"


def _common(parser: argparse.ArgumentParser, after_action: bool) -> argparse.ArgumentParser:
    """The shared options, accepted before the action and after it (`keys create --json`)."""
    def default(value: object) -> object:
        return argparse.SUPPRESS if after_action else value  # absent after: keep the earlier

    parser.add_argument("--policy", default=default(os.environ.get(POLICY_ENV)),
                        help=f"policy file (default: ${POLICY_ENV}); names the store and pepper")
    parser.add_argument("--store", default=default(None),
                        help="store URL, overriding the policy's (e.g. sqlite:///k.db)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print JSON")
    return parser


def add_parser(commands: Any) -> None:
    keys = _common(commands.add_parser("keys", help="issue, list, revoke and rotate API keys"),
                   after_action=False)
    common = _common(argparse.ArgumentParser(add_help=False), after_action=True)
    sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=text, parents=[common])
        return parser

    create = action("create", "issue a key (the secret is printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--network", action="append", default=[], metavar="CIDR",
                        help="allowed network (repeatable); the tenant's networks apply too")
    create.add_argument("--expires-in", metavar="DURATION", help="e.g. 90d, 12h")
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    _limit_options(create)
    create.add_argument("--country", action="append", default=[], metavar="CC[,CC...]",
                        help="countries the key may be used from (ISO codes, e.g. DE,FR); "
                             "the tenant's country rule applies too")

    lst = action("list", "list keys (never secrets)")
    lst.add_argument("--tenant")
    for name, text in (("show", "show one key's record"), ("revoke", "revoke a key for good"),
                       ("suspend", "suspend a key until reinstated"),
                       ("reinstate", "make a suspended key active again")):
        action(name, text).add_argument("key_id")
    update = action("update", "change a key's own limits or countries (they only narrow its "
                              "tenant's; the secret stays the same)")
    update.add_argument("key_id")
    _limit_options(update)
    update.add_argument("--country", action="append", default=[], metavar="CC[,CC...]",
                        help="the key's countries from now on, or 'none' to unbind it")
    rotate = action("rotate", "issue a replacement; the old key works for --grace")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", default="24h", metavar="DURATION")


_LIMIT_HELP = {
    "rpm": "requests per minute", "tpm": "tokens per minute",
    "concurrency": "requests in flight", "daily_requests": "requests per UTC day",
    "daily_tokens": "tokens per UTC day", "monthly_requests": "requests per UTC month",
    "monthly_tokens": "tokens per UTC month", "daily_spend": "dollars per UTC day",
    "monthly_spend": "dollars per UTC month"}


def _limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "key limits", "the key's own limits: they can only narrow its tenant's; 'none' clears")
    for dest in FLAGS:
        group.add_argument(flag_name(dest), dest=dest, metavar="N", help=_LIMIT_HELP[dest])


def _given_limits(args: argparse.Namespace) -> dict[str, str | None]:
    return {dest: getattr(args, dest, None) for dest in FLAGS}


async def run(args: argparse.Namespace) -> int:
    if not args.policy:
        raise ConfigError("--policy", MISSING, f"is required (or set ${POLICY_ENV}): the "
                                               "policy names the tenants, the store and the pepper")
    policy = load_policy(args.policy)
    store = store_from_url(args.store or policy.store or DEFAULT_STORE_URL,
                           "--store" if args.store else "store")
    try:
        return await _dispatch(args, policy, store, time.time())
    finally:
        await store.close()


async def _dispatch(args: argparse.Namespace, policy: Policy, store: Store, now: float) -> int:
    action = args.action
    if action == "create":
        expires = None if args.expires_in is None else \
            now + key_admin.parse_duration(args.expires_in, "--expires-in")
        key, record = await key_admin.create_key(
            store, load_pepper(policy.keys), policy, args.tenant, now, networks=args.network,
            expires_at=expires, labels=_labels(args.label),
            limits=apply_flags({}, _given_limits(args)),
            countries=key_admin.parse_countries(args.country))
        _print_secret(args, "Created", key, record)
    elif action == "update":
        given = _given_limits(args)
        if all(v is None for v in given.values()) and not args.country:
            raise ConfigError("update", args.key_id, "changes nothing: give a limit option "
                                                     "such as --rpm 60 (or --rpm none) or "
                                                     "--country")
        if args.country:
            record = await key_admin.set_countries(
                store, args.key_id, key_admin.parse_countries(args.country), now)
        if any(v is not None for v in given.values()):
            record = await key_admin.set_limits(store, policy, args.key_id, given, now)
        _show(args, record)
    elif action == "list":
        records = await store.list_keys(args.tenant)
        if args.json:
            print(_json([r.public_view() for r in records]))
        else:
            _table(records)
    elif action == "show":
        _show(args, await key_admin.get_key(store, args.key_id))
    elif action == "rotate":
        grace = key_admin.parse_duration(args.grace, "--grace", minimum=0.0)
        key, new, old = await key_admin.rotate_key(
            store, load_pepper(policy.keys), args.key_id, now, grace, policy.keys.prefix)
        _print_secret(args, "Rotated", key, new,
                      f"The old key {old.key_id} stays valid until {_time(old.expires_at)}.")
    else:
        status = {"revoke": KeyStatus.REVOKED, "suspend": KeyStatus.SUSPENDED,
                  "reinstate": KeyStatus.ACTIVE}[action]
        record = await key_admin.set_status(store, args.key_id, status, now)
        _show(args, record)
        event = {"revoke": KEY_REVOKED, "suspend": KEY_SUSPENDED}.get(action)
        if event is not None:
            detail = "gatekeeper keys " + action
            await key_events.record(policy, store, event, record.tenant, record.key_id, now,
                                    detail)
            said = await key_events.announce(policy, event, record.tenant, record.key_id, now,
                                             detail=detail)
            if said is not None:
                print(said, file=sys.stderr)
    return 0


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for i, pair in enumerate(pairs):
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--label[{i}]", pair, "must look like KEY=VALUE")
        labels[name] = value
    return labels


def _print_secret(args: argparse.Namespace, verb: str, key: str, record: KeyRecord,
                  note: str = "") -> None:
    if args.json:
        print(_json({"key": key, "record": record.public_view()}))
        return
    print(f"{verb} key {record.key_id} for tenant {record.tenant}.")
    print(f"\n    {key}\n")
    print("This is the only time the key is shown: gatekeeper stores only a peppered hash.")
    if note:
        print(note)


def _show(args: argparse.Namespace, record: KeyRecord) -> None:
    if args.json:
        print(_json(record.public_view()))
        return
    view = record.public_view()
    for field in ("created_at", "updated_at", "expires_at"):
        view[field] = _time(view[field])
    view["allowed_networks"] = ", ".join(record.allowed_networks)
    view["countries"] = ", ".join(record.countries)
    view["labels"] = ", ".join(f"{k}={v}" for k, v in record.labels.items())
    view["limits"] = ", ".join(f"{k}={_limit_text(k, v)}" for k, v in record.limits.items())
    width = max(len(k) for k in view)
    for name, value in view.items():
        print(f"{name:<{width}}  {value if value not in (None, '') else '-'}")


def _limit_text(field: str, value: object) -> str:
    return shown(field, round(value * 1_000_000)) if field.endswith("_spend") and \
        isinstance(value, int | float) else str(value)


def _table(records: list[KeyRecord]) -> None:
    rows = [("KEY ID", "TENANT", "STATUS", "NETWORKS", "EXPIRES", "CREATED")]
    rows += [(r.key_id, r.tenant, r.status.value, ",".join(r.allowed_networks) or "-",
              _time(r.expires_at), _time(r.created_at)) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not records:
        print("(no keys)", file=sys.stderr)


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # inf, NaN, past year 9999: shown, not fatal
        return f"{ts!r} (not a date)"


def _json(data: object) -> str:
    """Strict JSON: a non-finite time (written by an older release) prints as a string."""
    def finite(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return repr(value)
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(data), indent=2, allow_nan=False)

"""``gatekeeper inspect KEY_ID``: a key's status and its resale score with the top reasons,
as the serving processes last wrote them to the store (``resale/snapshot.py``: up to a second
behind the score they judged by, itself up to ``RESCORE_EVERY`` requests behind)."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from gatekeeper.errors import MISSING, ConfigError
from gatekeeper.key_admin import check_key_id, get_key
from gatekeeper.policy.load import load_policy
from gatekeeper.store import DEFAULT_STORE_URL, store_from_url

POLICY_ENV = "GATEKEEPER_POLICY"


def add_parser(commands: Any) -> None:
    inspect = commands.add_parser(
        "inspect", help="show a key's status and resale score with its top reasons")
    inspect.add_argument("key_id", metavar="KEY_ID")
    inspect.add_argument("--policy", default=os.environ.get(POLICY_ENV),
                         help=f"policy file (default: ${POLICY_ENV}); names the store")
    inspect.add_argument("--store", help="store URL, overriding the policy's")
    inspect.add_argument("--json", action="store_true", help="print JSON")


async def run(args: argparse.Namespace) -> int:
    if not args.store and not args.policy:
        raise ConfigError("--policy", MISSING, f"or --store is required (or set ${POLICY_ENV})")
    url = args.store or load_policy(args.policy).store or DEFAULT_STORE_URL
    store = store_from_url(url, "--store" if args.store else "store", create=False)
    key_id = check_key_id(args.key_id)
    try:
        record = await get_key(store, key_id)
        snapshot = await store.get_score(key_id, time.time())
    finally:
        await store.close()
    if args.json:
        print(json.dumps({"key_id": key_id, "tenant": record.tenant,
                          "status": str(record.status),
                          "score": None if snapshot is None else snapshot.score,
                          "would": None if snapshot is None else snapshot.would,
                          "scored_at": None if snapshot is None else snapshot.at,
                          "reasons": [] if snapshot is None else list(snapshot.reasons)}))
        return 0
    print(f"key {key_id}  tenant {record.tenant}  status {record.status}")
    if snapshot is None:
        print("resale score: none recorded (not used since the snapshots' time to live, or "
              "the score is off)")
        return 0
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.at))
    print(f"resale score: {snapshot.score:.0f} (would {snapshot.would}) at {when}")
    for reason in snapshot.reasons or ("no signal scored",):
        print(f"  {reason}")
    return 0

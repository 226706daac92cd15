"""``gatekeeper demo``: a mock OpenAI endpoint behind gatekeeper, with fresh keys to try."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import uvicorn

from gatekeeper import key_admin
from gatekeeper.demo.app import build_demo_app, write_demo_policy
from gatekeeper.policy.load import load_pepper, load_policy
from gatekeeper.principal import KeyStatus
from gatekeeper.store import store_from_url


async def issue_demo_keys(policy_path: Path) -> dict[str, str]:
    """Fresh keys for each demo run: good, bound elsewhere, revoked, and another tenant's."""
    policy = load_policy(policy_path)
    assert policy.store is not None
    store = store_from_url(policy.store)
    pepper, now = load_pepper(policy.keys), time.time()
    try:
        good, _ = await key_admin.create_key(store, pepper, policy, "acme", now,
                                             labels={"demo": "good"})
        wrong_net, _ = await key_admin.create_key(store, pepper, policy, "acme", now,
                                                  networks=["203.0.113.0/24"],
                                                  labels={"demo": "wrong-network"})
        revoked, record = await key_admin.create_key(store, pepper, policy, "acme", now,
                                                     labels={"demo": "revoked"})
        await key_admin.set_status(store, record.key_id, KeyStatus.REVOKED, now)
        globex, _ = await key_admin.create_key(store, pepper, policy, "globex", now,
                                               labels={"demo": "other-tenant"})
    finally:
        await store.close()
    return {"good": good, "wrong_network": wrong_net, "revoked": revoked, "globex": globex}


def run_demo(host: str, port: int, directory: str) -> int:
    policy_path = write_demo_policy(Path(directory))
    keys = asyncio.run(issue_demo_keys(policy_path))
    app, _ = build_demo_app(policy_path)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    print(banner(f"http://{host}:{port}", keys, policy_path), flush=True)
    # No proxy headers: gatekeeper alone decides who the client is (see client_address).
    uvicorn.run(app, host=host, port=port, proxy_headers=False, server_header=False,
                log_level="warning")
    return 0


def banner(base: str, keys: dict[str, str], policy_path: Path) -> str:
    model, message = "gpt-4o-mini", '[{"role":"user","content":"hi"}]'
    body = f'{{"model":"{model}","messages":{message}}}'
    chat = f"-H 'content-type: application/json' -d '{body}'"
    python = (f"from openai import OpenAI; c = OpenAI(base_url='{base}/v1', "
              f"api_key='{keys['good']}'); print(c.chat.completions.create(model='{model}', "
              f"messages={message.replace(chr(34), chr(39))}).choices[0].message.content)")
    return f"""
gatekeeper demo: a mock OpenAI-compatible endpoint behind gatekeeper at {base}
policy: {policy_path}   (audit lines of refusals appear below as gatekeeper.audit)

  good key (tenant acme):             {keys['good']}
  key bound to 203.0.113.0/24:        {keys['wrong_network']}
  revoked key:                        {keys['revoked']}
  key of tenant globex (office only): {keys['globex']}

Try:
  curl -s {base}/v1/chat/completions -H "Authorization: Bearer {keys['good']}" {chat}
      -> 200, a completion
  curl -s {base}/v1/models -H "Authorization: Bearer {keys['wrong_network']}"
      -> 403 network_not_allowed
  curl -s {base}/v1/models -H "X-Forwarded-For: 198.51.100.7" -H "api-key: {keys['globex']}"
      -> 403: claiming globex's office address in a forwarding header changes nothing
  curl -s {base}/v1/models -H "Authorization: Bearer {keys['revoked']}"
      -> 401 key_revoked
  curl -s {base}/v1/models -H "Authorization: Bearer gk_this1is2not3a4real5key"
      -> 401 credential_malformed (refused at the checksum, before any lookup)
  curl -s {base}/v1/models -H "x-tenant-id: globex" -H "Authorization: Bearer {keys['good']}"
      -> 403 tenant_mismatch
  curl -s {base}/metrics | grep gatekeeper_decisions

  python -c "{python}"

  gatekeeper keys --policy {policy_path} list
  gatekeeper keys --policy {policy_path} revoke <KEY ID>   (refused here within a second)

Ctrl-C stops the demo.
"""

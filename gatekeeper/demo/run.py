"""``gatekeeper demo``: a mock OpenAI endpoint behind gatekeeper, with fresh keys to try."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path

import uvicorn

from gatekeeper import key_admin
from gatekeeper.demo.app import build_demo_app, write_demo_policy
from gatekeeper.errors import ConfigError
from gatekeeper.policy.keys import load_pepper
from gatekeeper.policy.load import load_policy
from gatekeeper.principal import KeyStatus
from gatekeeper.store import store_from_url

DEMO_KEY_LIFETIME = 86400.0
"""Demo keys expire in a day; each run also revokes the keys of the runs before it."""


async def issue_demo_keys(policy_path: Path) -> dict[str, str]:
    """Fresh keys for each demo run: good, bound to another network or country, revoked, and
    another tenant's."""
    policy = load_policy(policy_path)
    assert policy.store is not None
    store = store_from_url(policy.store)
    pepper, now = load_pepper(policy.keys), time.time()
    expires = now + DEMO_KEY_LIFETIME

    async def issue(tenant: str, label: str, networks: tuple[str, ...] = (),
                    countries: tuple[str, ...] = ()) -> str:
        key, record = await key_admin.create_key(store, pepper, policy, tenant, now,
                                                 networks=networks, expires_at=expires,
                                                 labels={"demo": label}, countries=countries)
        if label == "revoked":
            await key_admin.set_status(store, record.key_id, KeyStatus.REVOKED, now)
        return key

    try:
        for old in await store.list_keys():
            if "demo" in old.labels and old.status is not KeyStatus.REVOKED:
                await key_admin.set_status(store, old.key_id, KeyStatus.REVOKED, now)
        return {"good": await issue("acme", "good"),
                "wrong_network": await issue("acme", "wrong-network", ("203.0.113.0/24",)),
                "wrong_country": await issue("acme", "wrong-country", countries=("DE",)),
                "revoked": await issue("acme", "revoked"),
                "globex": await issue("globex", "other-tenant"),
                "trial": await issue("trial", "trial") if "trial" in policy.tenants else ""}
    finally:
        await store.close()


def run_demo(host: str, port: int, directory: str) -> int:
    sock = _listen(host, port)  # before any key is issued or printed
    policy_path = write_demo_policy(Path(directory))
    keys = asyncio.run(issue_demo_keys(policy_path))
    app, _ = build_demo_app(policy_path)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    print(banner(base, keys, policy_path), flush=True)
    # No proxy headers: gatekeeper alone decides who the client is (see client_address).
    config = uvicorn.Config(app, proxy_headers=False, server_header=False, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """The demo's socket, bound now, so a busy port is one clear line and not a traceback
    after the banner."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError, OverflowError):
        raise ConfigError("--host", host, "is not an address to listen on") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        problem = (f"is already in use on {host}; pick another with --port (with make: "
                   "make demo DEMO_ARGS='--port 8001')"
                   if exc.errno == errno.EADDRINUSE else
                   f"cannot be listened on at {host}: {exc.strerror or exc}")
        raise ConfigError("--port", port, problem) from None
    return sock


def _commands() -> tuple[str, str]:
    """This interpreter and its ``gatekeeper`` script, by absolute path: the banner's commands
    then work in a fresh terminal, where the virtualenv is not activated."""
    python = os.path.abspath(sys.executable)  # not resolved: a venv's python is a symlink
    script = Path(python).with_name("gatekeeper")
    cli = shlex.quote(str(script)) if script.is_file() else \
        f"{shlex.quote(python)} -m gatekeeper.cli.main"
    return shlex.quote(python), cli


def banner(base: str, keys: dict[str, str], policy_path: Path) -> str:
    model, message = "gpt-4o-mini", '[{"role":"user","content":"hi"}]'
    body = f'{{"model":"{model}","messages":{message}}}'
    chat = f"-H 'content-type: application/json' -d '{body}'"
    code = (f"from openai import OpenAI; c = OpenAI(base_url='{base}/v1', "
            f"api_key='{keys['good']}'); print(c.chat.completions.create(model='{model}', "
            f"messages={message.replace(chr(34), chr(39))}).choices[0].message.content)")
    python, cli = _commands()
    policy = shlex.quote(str(policy_path.resolve()))
    trial = keys["trial"] or "(none: this policy.yaml predates the trial tenant)"
    limit_loop = (f"for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}} ' "
                  f"{base}/v1/models -H \"Authorization: Bearer {keys['trial']}\"; done; echo")
    return f"""
gatekeeper demo: a mock OpenAI-compatible endpoint behind gatekeeper at {base}
policy: {policy_path}   (audit lines of refusals appear below as gatekeeper.audit)

  good key (tenant acme):             {keys['good']}
  key bound to 203.0.113.0/24:        {keys['wrong_network']}
  key bound to Germany (DE):          {keys['wrong_country']}
  revoked key:                        {keys['revoked']}
  key of tenant globex (office only): {keys['globex']}
  trial key (3 requests a minute):    {trial}

These keys expire in 24 hours; the keys of earlier demo runs are now revoked.

Try:
  curl -s {base}/v1/chat/completions -H "Authorization: Bearer {keys['good']}" {chat}
      -> 200, a completion
  curl -s {base}/v1/models -H "Authorization: Bearer {keys['wrong_network']}"
      -> 403 network_not_allowed
  curl -s {base}/v1/models -H "Authorization: Bearer {keys['wrong_country']}"
      -> 403 country_not_allowed (loopback is in no country; the embedded iptocc answers)
  curl -s {base}/v1/models -H "X-Forwarded-For: 198.51.100.7" -H "api-key: {keys['globex']}"
      -> 403: claiming globex's office address in a forwarding header changes nothing
  curl -s {base}/v1/models -H "Authorization: Bearer {keys['revoked']}"
      -> 401 key_revoked
  curl -s {base}/v1/models -H "Authorization: Bearer gk_this1is2not3a4real5key"
      -> 401 credential_malformed (refused at the checksum, before any lookup)
  curl -s {base}/v1/models -H "x-tenant-id: globex" -H "Authorization: Bearer {keys['good']}"
      -> 403 tenant_mismatch
  {limit_loop}
      -> 200 200 200 429: the trial tenant's 3 requests a minute (retry-after says when)
  curl -s {base}/metrics | grep gatekeeper_decisions
      -> the counters (served to this machine only)

  {python} -c "{code}"

  {cli} keys --policy {policy} list
  {cli} keys --policy {policy} revoke <KEY ID>   (refused here within a second)

Ctrl-C stops the demo.
"""

"""The ``gatekeeper`` command. Errors print one clear line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Sequence

from gatekeeper.cli import geo, inspect, keys, limits, replay, simulate
from gatekeeper.cli.diff import run_diff
from gatekeeper.errors import ConfigError, GatekeeperError, PolicyError, redact_url
from gatekeeper.jwt_verifier import JwtVerifier
from gatekeeper.keys import key_pattern
from gatekeeper.policy.keys import load_pepper
from gatekeeper.policy.load import load_policy
from gatekeeper.store import DEFAULT_STORE_URL, store_from_url
from gatekeeper.webhooks import resolve_targets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatekeeper",
        description="Stop stolen and resold API keys in front of a GenAI endpoint.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keys.add_parser(commands)
    geo.add_parser(commands)
    limits.add_parser(commands)
    replay.add_parser(commands)
    simulate.add_parser(commands)
    inspect.add_parser(commands)
    check = commands.add_parser(
        "check-config", help="validate a policy file, or show what a reload would change",
        description="Validate POLICY. With --diff OLD NEW: print what reloading NEW over OLD "
                    "would change; exit 0 nothing, 1 changes a reload applies, 2 an invalid "
                    "policy, 3 changes only a restart applies (store, pepper).")
    check.add_argument("policy", metavar="POLICY|OLD")
    check.add_argument("new", nargs="?", metavar="NEW", help="with --diff: the new policy")
    check.add_argument("--diff", action="store_true",
                       help="compare OLD and NEW instead of validating one policy")
    demo = commands.add_parser("demo", help="run a mock OpenAI endpoint behind gatekeeper")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--dir", default=".gatekeeper-demo",
                      help="where the demo keeps its policy, pepper and key store")
    commands.add_parser("pepper", help="print a new random pepper for GATEKEEPER_PEPPER")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "keys":
            return asyncio.run(keys.run(args))
        if args.command == "limits":
            return asyncio.run(limits.run(args))
        if args.command == "geo":
            return geo.run(args)
        if args.command == "inspect":
            return asyncio.run(inspect.run(args))
        if args.command == "replay":
            return replay.run(args)
        if args.command == "simulate":
            return simulate.run(args)
        if args.command == "check-config":
            if args.diff or args.new is not None:
                return _diff(args.policy, args.new, args.diff)
            return check_config(args.policy)
        if args.command == "pepper":
            print(secrets.token_urlsafe(48))
            return 0
        from gatekeeper.demo.run import run_demo

        return run_demo(args.host, args.port, args.dir)
    except PolicyError as exc:
        print(f"gatekeeper: {exc}", file=sys.stderr)
        return 2
    except GatekeeperError as exc:
        print(f"gatekeeper: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _diff(old: str, new: str | None, asked: bool) -> int:
    if not asked:
        raise ConfigError("check-config", new, "takes one policy; compare two with --diff OLD NEW")
    if new is None:
        raise ConfigError("--diff", old, "needs two policies: --diff OLD NEW")
    return run_diff(old, new)


def check_config(path: str) -> int:
    policy = load_policy(path)
    print(f"{path}: ok ({len(policy.tenants)} tenants, {len(policy.issuers)} JWT issuers, "
          f"protecting {', '.join(policy.routes.protect)})")
    print(f"store: {redact_url(policy.store or DEFAULT_STORE_URL)}")
    earlier = policy.keys.accepted_prefixes
    print(f"keys: prefix {policy.keys.prefix}"
          + (f" (also accepting {', '.join(earlier)})" if earlier else "")
          + f"; secret-scanning pattern: {key_pattern(policy.keys.prefix)}")
    if (policy.store or "").startswith(("redis://", "rediss://", "redis+", "rediss+")):
        # reachable from here, perhaps not from where the server runs: warn only
        try:
            summary, warnings = asyncio.run(_describe(policy.store or ""))
            print(f"store answers: {summary}")
            for warning in warnings:
                print(f"warning: store: {warning}", file=sys.stderr)
        except GatekeeperError as exc:
            print(f"warning: {exc} (the store must answer where the server runs)",
                  file=sys.stderr)
    # Secrets come from the environment, which may differ where the server runs: warn only.
    try:
        load_pepper(policy.keys)
    except GatekeeperError as exc:
        print(f"warning: {exc} (needed to create or verify keys)", file=sys.stderr)
    try:
        JwtVerifier(policy.issuers)
    except GatekeeperError as exc:
        print(f"warning: {exc} (needed to verify JWTs)", file=sys.stderr)
    try:
        resolve_targets(policy, os.environ)
    except PolicyError as exc:
        for error in exc.errors:
            print(f"warning: {error} (needed to sign webhooks; the server refuses to start "
                  "without it)", file=sys.stderr)
    return 0


async def _describe(url: str) -> tuple[str, list[str]]:
    from gatekeeper.store.redis import RedisStore

    store = store_from_url(url)
    try:
        assert isinstance(store, RedisStore)
        return await store.describe()
    finally:
        await store.close()


if __name__ == "__main__":
    sys.exit(main())

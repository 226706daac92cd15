"""The ``gatekeeper`` command. Errors print one clear line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Sequence

from gatekeeper.cli import geo, keys, limits, replay, simulate
from gatekeeper.errors import GatekeeperError, PolicyError, redact_url
from gatekeeper.jwt_verifier import JwtVerifier
from gatekeeper.policy.keys import load_pepper
from gatekeeper.policy.load import load_policy
from gatekeeper.store import DEFAULT_STORE_URL


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
    check = commands.add_parser("check-config", help="validate a policy file")
    check.add_argument("policy")
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
        if args.command == "replay":
            return replay.run(args)
        if args.command == "simulate":
            return simulate.run(args)
        if args.command == "check-config":
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


def check_config(path: str) -> int:
    policy = load_policy(path)
    print(f"{path}: ok ({len(policy.tenants)} tenants, {len(policy.issuers)} JWT issuers, "
          f"protecting {', '.join(policy.routes.protect)})")
    print(f"store: {redact_url(policy.store or DEFAULT_STORE_URL)}")
    # Secrets come from the environment, which may differ where the server runs: warn only.
    try:
        load_pepper(policy.keys)
    except GatekeeperError as exc:
        print(f"warning: {exc} (needed to create or verify keys)", file=sys.stderr)
    try:
        JwtVerifier(policy.issuers)
    except GatekeeperError as exc:
        print(f"warning: {exc} (needed to verify JWTs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``gatekeeper geo IP...``: where an address is, and which resolver said so.

A security team checking a complaint ("my key was refused from Berlin") runs it with the
server's policy, so it asks the same files as the server; without ``--policy`` it asks the
embedded default. A CDN header cannot be checked this way: it is per request.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gatekeeper.errors import ConfigError
from gatekeeper.geo.location import Location, network_group
from gatekeeper.geo.resolver import GeoResolver, resolver_from_policy
from gatekeeper.networks import IPAddr, parse_ip
from gatekeeper.policy.load import load_policy


def add_parser(commands: Any) -> None:
    geo = commands.add_parser("geo", help="show the country, ASN and coordinates of addresses")
    geo.add_argument("ips", nargs="+", metavar="IP")
    geo.add_argument("--policy", help="use this policy's geo files (default: embedded only)")
    geo.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace) -> int:
    addrs: list[IPAddr] = []
    for text in args.ips:
        addr = parse_ip(text.strip())
        if addr is None:
            raise ConfigError("IP", text, "is not an IP address")
        addrs.append(addr)
    resolver = resolver_from_policy(load_policy(args.policy).geo) if args.policy \
        else GeoResolver()
    for addr in addrs:
        found = resolver.lookup(addr)
        print(json.dumps(_as_dict(addr, found)) if args.json else _line(addr, found))
    return 0


def _as_dict(addr: IPAddr, found: Location) -> dict[str, object]:
    return {"ip": addr.text, "country": found.country, "asn": found.asn,
            "as_name": found.as_name, "latitude": found.latitude,
            "longitude": found.longitude, "resolver": found.source,
            "network_group": network_group(addr, found.asn)}


def _line(addr: IPAddr, found: Location) -> str:
    asn = "-" if found.asn is None else f"AS{found.asn}" + \
        (f" ({found.as_name})" if found.as_name else "")
    where = "-" if found.latitude is None else f"{found.latitude:.4f},{found.longitude:.4f}"
    return (f"{addr.text}  country={found.country or '-'}  asn={asn}  coordinates={where}  "
            f"resolver={found.source}  group={network_group(addr, found.asn)}")

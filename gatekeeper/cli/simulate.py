"""``gatekeeper simulate``: labelled synthetic traffic through the scored replay; prints per
scenario precision, recall, false-positive rate and time to detect, and the issue's targets.

``--write FILE`` also writes the traffic (JSON lines, each with its ``scenario`` and
``label``) and what replays it: ``FILE.policy.yaml``, its pepper and a SQLite key store
holding the keys it uses, and (when ``mmdb-writer`` is installed) ``FILE.geo.mmdb`` with the
synthetic world's countries and ASNs, so ``gatekeeper replay FILE --policy FILE.policy.yaml``
sees what the simulation saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import yaml

from gatekeeper.errors import ConfigError
from gatekeeper.resale.report import Timelines, render, write_report
from gatekeeper.resale.scenarios import World
from gatekeeper.resale.simulate import (
    PEPPER,
    measure,
    ordered,
    prepare,
    rows,
    simulation_policy,
    table,
    verdict,
)
from gatekeeper.store.base import Store
from gatekeeper.store.sqlite import SQLiteStore


def add_parser(commands: Any) -> None:
    simulate = commands.add_parser(
        "simulate", help="score synthetic legitimate and abusive traffic; print how it did")
    simulate.add_argument("--seed", type=int, default=1, help="the traffic's random seed")
    simulate.add_argument("--keys", type=int, default=3, choices=range(1, 21),
                          metavar="1..20", help="keys per scenario (default 3)")
    simulate.add_argument("--write", metavar="FILE",
                          help="also write the traffic and a policy and key store to replay it")
    simulate.add_argument("--report", metavar="FILE.html",
                          help="write a self-contained HTML page: the table and every key's "
                               "score over time, its first abuse marked")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    timelines = Timelines() if args.report else None
    outcomes, requests = asyncio.run(_simulate(args.seed, args.keys, args.write, timelines))
    seconds = time.perf_counter() - started
    heading = (f"{requests} requests, seed {args.seed}, {args.keys} keys per scenario, "
               f"simulated and scored in {seconds:.1f} s")
    if timelines is not None:
        page = render("gatekeeper simulate", [("Scenarios", rows(outcomes))], timelines,
                      [heading, *verdict(outcomes)], most=len(timelines.keys))
        write_report(args.report, page)
    print(heading)
    print()
    print("\n".join(table(outcomes)))
    print()
    print("\n".join(verdict(outcomes)))
    return 0


async def _simulate(seed: int, keys: int, write: str | None,
                    timelines: Timelines | None) -> tuple[Any, int]:
    store: Store | None = None
    if write is not None:
        target = Path(write)
        db = target.with_name(target.name + ".keys.db")
        db.unlink(missing_ok=True)
        store = SQLiteStore(db)
    traffic, world, policy, store = await prepare(seed, keys, store)
    try:
        if write is not None:
            _write(Path(write), ordered(traffic), world, simulation_policy(traffic))
        return await measure(traffic, world, policy, store, timelines)
    finally:
        await store.close()


def _write(target: Path, records: list[dict[str, Any]], world: World,
           policy: dict[str, Any]) -> None:
    name = target.name
    try:
        with target.open("w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
        pepper = target.with_name(name + ".pepper")
        pepper.write_text(PEPPER.decode() + "\n")
        pepper.chmod(0o600)
        policy = dict(policy, store=f"sqlite:///{name}.keys.db",
                      keys={"pepper_file": f"{name}.pepper"})
        if _write_world(target.with_name(name + ".geo.mmdb"), world):
            policy["geo"] = {"files": {"country": f"{name}.geo.mmdb"}}
        target.with_name(name + ".policy.yaml").write_text(
            "# written by gatekeeper simulate: replay with\n"
            f"#   gatekeeper replay {name} --policy {name}.policy.yaml\n"
            + yaml.safe_dump(policy, sort_keys=False))
    except OSError as exc:
        raise ConfigError("--write", str(target), f"cannot be written: {exc.strerror}") from None


def _write_world(path: Path, world: World) -> bool:
    """The world as an IPinfo-Lite-layout file (country and ASN); False without the writer."""
    try:
        from mmdb_writer import MMDBWriter
        from netaddr import IPSet
    except ImportError:
        print(f"note: mmdb-writer is not installed: {path.name} not written, so a replay of "
              "the file sees no countries or ASNs")
        return False
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="ipinfo_lite.mmdb")
    for network, (country, asn) in world.places.items():
        writer.insert_network(IPSet([network]), {"country_code": country, "asn": f"AS{asn}"})
    writer.to_db_file(str(path))
    return True

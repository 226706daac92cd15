"""``redis-server`` processes a test can kill -9 and start again on the same port and directory,
and a Redis Cluster with a replica per primary: for the operational tests (a kill under load,
a restart with persistence, a failover). Free loopback ports, never 127.0.0.1:6379; without
the binaries they skip, and fail under ``CI=true`` (``tests/redis_server.py``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.redis_server import _answers, free_port, require_redis_server

AOF = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
"""What the README asks for (*Redis store*, Persistence)."""
RDB_ONLY = ("--appendonly", "no", "--save", "3600 1 300 100 60 10000")
"""Redis's default snapshots and no AOF: what a server left as installed persists."""
NOTHING = ("--appendonly", "no", "--save", "")


def require_redis_cli() -> str:
    cli = shutil.which("redis-cli")
    if cli is None:
        require_redis_server()  # skip or fail the same way, naming the missing binary
        reason = "redis-cli is not on PATH: the Redis Cluster tests need it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; under CI=true this is a failure, not a skip")
        pytest.skip(reason)
    return cli


class RedisNode:
    """One server on a fixed port and data directory; ``kill`` is SIGKILL (no save, no
    goodbye to clients), ``start`` again finds what the directory kept."""

    def __init__(self, directory: Path, *extra: str, persistence: tuple[str, ...] = NOTHING,
                 port: int | None = None) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", str(directory), "--logfile", "redis.log", "--loglevel", "notice",
                     *persistence, *extra]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, seconds: float = 15) -> RedisNode:
        """Start it and wait until it answers PING (not while it still loads its data)."""
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + seconds
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}: "
                                   f"{self.log()[-2000:]}")
            time.sleep(0.01)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: nothing saved on the way out."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def cli(self, *args: str) -> str:
        result = subprocess.run([require_redis_cli(), "-p", str(self.port), *args],
                                capture_output=True, text=True, timeout=10)
        return result.stdout

    def info(self, section: str) -> dict[str, str]:
        lines = self.cli("info", section).splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def promoted_at(self) -> float | None:
        """When this replica became a primary (epoch seconds, to the millisecond, from its log
        line "Failover election won"; the log's time is local): before it, nothing served its
        slots."""
        for line in self.log().splitlines():
            if "Failover election won" in line:
                stamp = " ".join(line.split()[1:5])  # 01 Dec 2026 03:42:43.390
                whole, _, ms = stamp.rpartition(".")
                return time.mktime(time.strptime(whole, "%d %b %Y %H:%M:%S")) + int(ms) / 1000
        return None

    def __enter__(self) -> RedisNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def cluster_with_replicas(directory: Path, masters: int = 3,
                          node_timeout_ms: int = 1000) -> Iterator[list[RedisNode]]:
    """A real Redis Cluster: ``masters`` primaries, each with one replica in sync, made with
    ``redis-cli --cluster create --cluster-replicas 1``; yields every node (primaries first,
    as created). A short ``cluster-node-timeout`` makes a failover take seconds."""
    cli = require_redis_cli()
    with ExitStack() as stack:
        nodes = [stack.enter_context(RedisNode(
            directory / f"node{i}", "--cluster-enabled", "yes",
            "--cluster-port", str(free_port()), "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms)).start())
            for i in range(2 * masters)]
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not all(_in_sync(node) for node in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok with every "
                                   "replica in sync")
            time.sleep(0.05)
        yield nodes


def _in_sync(node: RedisNode) -> bool:
    if "cluster_state:ok" not in node.cli("cluster", "info"):
        return False
    replication = node.info("replication")
    return replication.get("role") == "master" or \
        replication.get("master_link_status") == "up"


def primary_for(nodes: list[RedisNode], key: str, asked: RedisNode | None = None) -> RedisNode:
    """The node serving ``key``'s hash slot, as ``asked`` (or the first running node) sees it."""
    asked = asked or next(n for n in nodes if n.running)
    slot = int(asked.cli("cluster", "keyslot", key))
    for line in asked.cli("cluster", "nodes").splitlines():
        fields = line.split()
        if "master" not in fields[2].split(",") or "fail" in fields[2].split(","):
            continue
        for part in fields[8:]:
            first, _, last = part.partition("-")
            if first.isdigit() and int(first) <= slot <= int(last or first):
                port = int(fields[1].split("@")[0].rpartition(":")[2])
                return next(n for n in nodes if n.port == port)
    raise LookupError(f"no live primary serves slot {slot} of {key!r}")


def replica_of(nodes: list[RedisNode], primary: RedisNode) -> RedisNode:
    for node in nodes:
        replication = node.info("replication") if node.running else {}
        if replication.get("role") == "slave" and \
                replication.get("master_port") == str(primary.port):
            return node
    raise LookupError(f"no replica of the primary on port {primary.port}")

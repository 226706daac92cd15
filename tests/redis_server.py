"""A throwaway ``redis-server`` of the tests' own: a free loopback port, a temporary directory,
no persistence. Never the Redis on 127.0.0.1:6379. Without the binary the Redis tests skip
with the reason, except under ``CI=true``, where a missing server is a failure."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

BINARY = "redis-server"


def require_redis_server() -> str:
    """The binary's path, or skip (fail under CI) saying why."""
    path = shutil.which(BINARY)
    if path is None:
        reason = (f"{BINARY} is not on PATH: the Redis store tests need a real server "
                  "(apt-get install redis-server)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; under CI=true this is a failure, not a skip")
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    if port == 6379:  # never the shared server's port, even by chance
        return free_port()
    return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(*extra: str, port: int | None = None) -> Iterator[int]:
    """Start a server (on ``port``, or a free one), yield its port, stop it (and remove its
    directory)."""
    binary = require_redis_server()
    with tempfile.TemporaryDirectory(prefix="gk-redis-") as directory:
        port = port or free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory, "--loglevel", "warning", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not _answers(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{BINARY} did not start on port {port}")
                time.sleep(0.01)
            yield port
        finally:
            proc.terminate()
            proc.wait(5)


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[list[int]]:
    """A real Redis Cluster of ``masters`` primaries (no replicas) on free loopback ports,
    made with ``redis-cli --cluster create``; yields the ports once every slot is served."""
    cli = shutil.which("redis-cli")
    if cli is None:
        require_redis_server()  # skip or fail the same way, naming the missing binary
        pytest.skip("redis-cli is not on PATH: the Redis Cluster tests need it")
    with ExitStack() as stack:
        ports = [stack.enter_context(redis_server(
            "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"))
            for _ in range(masters)]
        subprocess.run([cli, "--cluster", "create",
                        *(f"127.0.0.1:{port}" for port in ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while not all(_cluster_ok(cli, port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster on {ports} did not reach cluster_state:ok")
            time.sleep(0.05)
        yield ports


def _cluster_ok(cli: str, port: int) -> bool:
    out = subprocess.run([cli, "-p", str(port), "cluster", "info"], capture_output=True,
                         text=True, timeout=5).stdout
    return "cluster_state:ok" in out

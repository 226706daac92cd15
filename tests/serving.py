"""Serve an ASGI app with a real uvicorn on a free loopback port, in a thread, for one test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn


@contextmanager
def serving(app: Any, **config: Any) -> Iterator[str]:
    """Yields the base URL (``http://127.0.0.1:PORT``); h11, no proxy headers by default."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "proxy_headers": False, "http": "h11",
                               "lifespan": "off"}
    server = uvicorn.Server(uvicorn.Config(app, **(options | config)))
    exits: list[object] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except SystemExit as exc:  # a failed lifespan startup exits the server
            exits.append(exc.code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), f"uvicorn stopped while starting (exit {exits})"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def raw_request(base: str, request_line: str, headers: dict[str, str] | None = None) -> bytes:
    """Send one request with exactly this request line (no client normalises it); the reply."""
    host, port = base.removeprefix("http://").split(":")
    lines = [request_line, f"Host: {host}", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall("\r\n".join(lines).encode("latin-1"))
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def wait_until_up(base: str, process: subprocess.Popen[str] | None = None,
                  what: str = "the server did not start", seconds: float = 20) -> None:
    """Poll ``base``/healthz until it answers; a subprocess that exits first fails at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(f"{base}/healthz")
            return
        except httpx.TransportError:
            if process is not None:
                assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, what
            time.sleep(0.1)


class UvicornProcess:
    """``uvicorn served:app`` in its own process, from a ``served.py`` written into ``directory``;
    its output is read line by line, and a timer kills it so a read can never hang."""

    def __init__(self, directory: Path, source: str, *args: str, limit: float = 60,
                 env: dict[str, str] | None = None) -> None:
        (directory / "served.py").write_text(source)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        environ = {**os.environ, **(env or {}),
                   "PYTHONPATH": f"{directory}:{Path(__file__).resolve().parent.parent}"}
        environ.pop("WEB_CONCURRENCY", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "served:app", "--port", str(self.port), *args],
            cwd=directory, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._guard = threading.Timer(limit, self.process.kill)
        self._guard.start()
        self.output = ""

    def read_until(self, done: Callable[[str], bool]) -> str:
        """Output lines until ``done(all output so far)``; fails if the process ends first."""
        assert self.process.stdout is not None
        while not done(self.output):
            line = self.process.stdout.readline()
            assert line, f"uvicorn exited (or was stopped by its time limit): {self.output}"
            self.output += line
        return self.output

    def __enter__(self) -> UvicornProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._guard.cancel()
        self.process.terminate()
        self.process.communicate(timeout=15)

"""One variant of ``http_variants.py`` served by uvicorn (uvloop, httptools) in its own process,
and the parent's handle on that process: its port, the key to send, its CPU time.

    python benchmarks/http_server.py VARIANT      # the child: prints one JSON line, then serves

The child binds 127.0.0.1 on a port the kernel picks and listens before it prints
``{"port": ..., "authorization": ...}``, so the parent can connect at once (connections wait
in the backlog until uvicorn accepts them) and no two servers race for a port. Proxy headers
are off (the client address is the socket's peer), and so is the access log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.driver import CheckFailed

START_TIMEOUT = 60.0
"""Seconds a child may take to import, build its app and print its line (several start at
once on a loaded 2-core machine)."""


def serve(variant_name: str) -> None:
    import uvicorn

    from benchmarks.http_variants import BY_NAME, build

    audit = logging.getLogger("gatekeeper.audit")  # the 401 probes: no line, no warning
    audit.setLevel(logging.WARNING)
    audit.addHandler(logging.NullHandler())
    app, authorization = asyncio.run(build(BY_NAME[variant_name]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on",
                            proxy_headers=False, access_log=False, log_level="warning",
                            backlog=2048)
    print(json.dumps({"port": sock.getsockname()[1], "authorization": authorization}),
          flush=True)
    uvicorn.Server(config).run(sockets=[sock])


class Server:
    """A running child: ``port``, ``authorization`` and ``cpu_seconds()`` (user + system time
    from ``/proc/<pid>/stat``; None where there is no /proc)."""

    def __init__(self, variant_name: str) -> None:
        self.name = variant_name
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(
            [sys.executable, __file__, variant_name], stdout=subprocess.PIPE,
            stderr=self._log, stdin=subprocess.DEVNULL, text=True)
        self.port = 0
        self.authorization = ""

    def ready(self) -> None:
        """Wait for the child's line (it is listening once it has printed it)."""
        assert self.process.stdout is not None
        waited = select.select([self.process.stdout], [], [], START_TIMEOUT)[0]
        line = self.process.stdout.readline() if waited else "(no line in time)"
        try:
            started = json.loads(line)
            self.port, self.authorization = int(started["port"]), str(started["authorization"])
        except (ValueError, KeyError, TypeError):
            raise CheckFailed(f"{self.name}: the server did not start: {line!r}\n"
                              f"{self.log_tail()}") from None

    def log_tail(self, size: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-size:]

    def cpu_seconds(self) -> float | None:
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


if __name__ == "__main__":
    serve(sys.argv[1])

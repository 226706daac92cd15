"""What a version of the counter scripts costs the server, in instructions: one scenario's real
calls recorded, then replayed against each version on a ``redis-server`` under callgrind.

    python benchmarks/lua_replay.py [--scenario NAME] [--requests N] [LUA_DIR ...]

Record: ``redis_path.py``'s scenario (``--child``) talks to a fresh ``redis-server`` through a
proxy here that keeps what went each way. Replay, once per ``LUA_DIR`` (a folder holding
``prelude.lua``, ``counters.lua`` and the heads; default: this tree's ``gatekeeper/store/lua``):
a fresh server under ``valgrind --tool=callgrind`` loads that version, each recorded command is
sent alone with its script's SHA swapped for the version's and its reply awaited, and an
EVALSHA that asked for the server's time ('') is given the time its recorded reply carried, so
the lease ids, and so the releases that name them, are the recording's. Prints instructions per
EVALSHA: the whole server's (parsing and replying included) and, where ``redis-server`` has its
symbols (one built from source: ``REDIS_SERVER=path``), the script calls' alone.

The parts priced by ``lua_parts.py`` do not add up inside a whole script (what the collector
does depends on everything a call allocates): a change to a script is weighed here.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import hiredis

ROOT = Path(__file__).resolve().parent.parent
HEADS = ("apply", "release", "reconcile", "settle")
Chunk = tuple[int, str, bytes]
"""(connection, 'c' client to server or 's' server to client, bytes)"""


def scripts(lua: Path) -> dict[str, str]:
    """Each script's text as ``redis_scripts.LuaScript`` sends it."""
    return {head: "\n".join((lua / f"{part}.lua").read_text("utf-8")
                            for part in ("prelude", head, "counters")) for head in HEADS}


def sha(text: str) -> bytes:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest().encode()


def record(scenario: str, requests: int) -> list[Chunk]:
    """What the scenario's child sent and received, through a proxy, in order."""
    from benchmarks.redis_path import start_redis  # slowapi's imports, only when recording

    chunks: list[Chunk] = []
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="gk-lua-replay-") as directory:
        server, port = start_redis(directory)
        listener = socket.create_server(("127.0.0.1", 0))
        proxy = listener.getsockname()[1]

        def pump(source: socket.socket, sink: socket.socket, conn: int, way: str) -> None:
            try:
                while data := source.recv(1 << 20):
                    with lock:
                        chunks.append((conn, way, data))
                    sink.sendall(data)
            except OSError:
                pass
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

        def accept() -> None:
            conn = 0
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                upstream = socket.create_connection(("127.0.0.1", port))
                for end in (client, upstream):
                    end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for args in ((client, upstream, conn, "c"), (upstream, client, conn, "s")):
                    threading.Thread(target=pump, args=args, daemon=True).start()
                conn += 1

        threading.Thread(target=accept, daemon=True).start()
        try:
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "redis_path.py"),
                            "--child", scenario, "--url", f"redis://127.0.0.1:{proxy}/0",
                            "--requests", str(requests)], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)  # the last replies through the proxy
        finally:
            listener.close()
            server.terminate()
            server.wait()
    return chunks


def _parse(parts: list[bytes]) -> list[Any]:
    reader = hiredis.Reader()
    out: list[Any] = []
    for part in parts:
        reader.feed(part)
        while (item := reader.gets()) is not False:
            out.append(item)
    return out


def commands(chunks: list[Chunk]) -> list[tuple[int, list[bytes]]]:
    """The recorded commands in the order sent, each EVALSHA with the server's time given the
    time its reply carried (an apply's first number) or, for the others, the last apply's."""
    sent: dict[int, list[bytes]] = {}
    got: dict[int, list[bytes]] = {}
    for conn, way, data in chunks:
        (sent if way == "c" else got).setdefault(conn, []).append(data)
    replies = {conn: _parse(got.get(conn, [])) for conn in sent}
    fixed: dict[int, list[list[bytes]]] = {}
    now = b"0"
    for conn, parts in sent.items():
        fixed[conn] = []
        for k, command in enumerate(_parse(parts)):
            if command[0].upper() == b"EVALSHA":
                at = 3 + int(command[2])
                reply = replies[conn][k] if k < len(replies[conn]) else None
                if isinstance(reply, bytes) and len(reply) >= 16:
                    now = b"%d" % int.from_bytes(reply[:8], "little", signed=True)
                if command[at] == b"":
                    command = [*command[:at], now, *command[at + 1:]]
            fixed[conn].append(command)
    order: list[tuple[int, list[bytes]]] = []
    taken = dict.fromkeys(sent, 0)
    for conn, way, data in chunks:
        if way == "c":
            for _ in _parse([data]):
                order.append((conn, fixed[conn][taken[conn]]))
                taken[conn] += 1
    return order


def _wire(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _ask(link: socket.socket, reader: Any, args: list[bytes]) -> Any:
    link.sendall(_wire(args))
    while (reply := reader.gets()) is False:
        reader.feed(link.recv(1 << 20))
    return reply


def replay(order: list[tuple[int, list[bytes]]], lua: Path, binary: str) -> tuple[int, float,
                                                                                   float]:
    """(EVALSHA calls, server instructions per call, the script calls' alone per call)."""
    recorded = {sha(text): head for head, text in scripts(ROOT / "gatekeeper/store/lua").items()}
    with tempfile.TemporaryDirectory(prefix="gk-lua-replay-") as directory:
        port = socket.create_server(("127.0.0.1", 0))
        number = port.getsockname()[1]
        port.close()
        out = Path(directory) / "callgrind.out"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary,
             "--port", str(number), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                admin = socket.create_connection(("127.0.0.1", number))
                break
            except OSError:
                if time.monotonic() > deadline:
                    server.kill()
                    raise
                time.sleep(0.1)
        reader = hiredis.Reader()
        version = {head: _ask(admin, reader, [b"SCRIPT", b"LOAD", text.encode()])
                   for head, text in scripts(lua).items()}
        swap = {old: version[head] for old, head in recorded.items()}
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        links: dict[int, tuple[socket.socket, Any]] = {}
        calls = 0
        for conn, args in order:
            if conn not in links:
                links[conn] = (socket.create_connection(("127.0.0.1", number)), hiredis.Reader())
            if args[0].upper() == b"EVALSHA":
                args = [args[0], swap.get(args[1], args[1]), *args[2:]]
                calls += 1
            _ask(*links[conn], args)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for link, _ in links.values():
            link.close()
        admin.sendall(_wire([b"SHUTDOWN", b"NOSAVE"]))
        server.wait()
        dump = next(p for p in Path(directory).iterdir() if p.name.startswith("callgrind.out."))
        text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                               str(dump)], capture_output=True, text=True, check=True).stdout
    total = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text)
    scripts_only = re.search(r"([\d,]+) \([\s\d.]+%\)\s+\S*:evalGenericCommand ", text)
    assert total is not None
    return (calls, int(total.group(1).replace(",", "")) / max(calls, 1),
            int(scripts_only.group(1).replace(",", "")) / max(calls, 1) if scripts_only else 0)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from benchmarks.redis_path import INSTRUCTIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lua", nargs="*", type=Path, default=[ROOT / "gatekeeper/store/lua"])
    parser.add_argument("--scenario", default="gk-limits-redis",
                        choices=[n for n in INSTRUCTIONS if n.startswith("gk-")])
    parser.add_argument("--requests", type=int, default=1000)
    options = parser.parse_args()
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if binary is None or shutil.which("valgrind") is None:
        print("redis-server and valgrind are needed (apt-get install redis-server valgrind)")
        return 0
    order = commands(record(options.scenario, options.requests))
    print(f"{options.scenario}, {options.requests} requests recorded; server instructions "
          "per EVALSHA, replayed:")
    for lua in options.lua:
        calls, total, alone = replay(order, lua, binary)
        shown = f"{alone:,.0f}" if alone else "(no symbols)"
        print(f"  {lua}: {calls} calls, {total:,.0f} in all, scripts alone {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each kind of thing a counter script does costs the Redis server, per call: the
figures to weigh a change to ``gatekeeper/store/lua/*.lua`` against before making it.

    python benchmarks/lua_parts.py [--calls N]

Starts its own ``redis-server`` on a free loopback port (never the one on 6379), loads one
tiny script per part, calls each ``N`` times (pipelined, so the client's speed does not
matter) and prints the server's own microseconds per call (``INFO commandstats``), the bare
``return 1`` first. Without ``redis-server`` it says so and exits 0. Nothing is written to
``RESULTS.md``: these are calibration figures, not a comparison with peers.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.redis_path import start_redis

PARTS = {
    "return 1": "return 1",
    "+ 2 local closures": "local function f(x) return x end "
                          "local function g(x) return x end return 1",
    "+ 10 small tables": "local t = {} for i = 1, 10 do t[i] = {a = i, b = i} end return 1",
    "+ 4 struct.unpack of 7 doubles": "for i = 1, 4 do "
                                      "local a, b, c, d, e, f, g = struct.unpack("
                                      "'<ddddddd', ARGV[1], 1) end return 1",
    "+ 6 string.format('%d')": "local x for i = 1, 6 do "
                              "x = string.format('%d', 1700000000000000 + i) end return 1",
    "+ TIME": "redis.call('TIME') return 1",
    "+ SET ... KEEPTTL": "redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1",
    "+ MGET of 2 keys": "redis.call('MGET', KEYS[1], KEYS[2]) return 1",
    "+ 4 struct.pack of 3 doubles": "for i = 1, 4 do struct.pack('<ddd', i, 2, 3) end return 1",
    "+ a table reply of 11 numbers": "return {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}",
}
"""A part each: what the scripts do per counter or per call (``counters.lua``)."""


def measure(port: int, calls: int) -> dict[str, float]:
    client = redis.Redis(port=port)
    keys = ("gk:{t}:a", "gk:{t}:b", "gk:{t}:c")
    client.set(keys[0], b"x" * 24)
    client.set(keys[1], b"y" * 24)
    client.set(keys[2], b"w" * 40)
    args = (struct.pack("<7d", *range(7)), b"z" * 24)
    out: dict[str, float] = {}
    for name, body in PARTS.items():
        sha = client.script_load(body)
        client.config_resetstat()
        for start in range(0, calls, 1000):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(1000, calls - start)):
                pipe.evalsha(sha, 3, *keys, *args)
            pipe.execute()
        out[name] = float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
    client.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gk-bench-lua-") as directory:
        try:
            proc, port = start_redis(directory)
        except FileNotFoundError:
            print("SKIPPED: redis-server is not installed (apt-get install redis-server)")
            return 0
        try:
            figures = measure(port, args.calls)
        finally:
            proc.terminate()
            proc.wait(5)
    print("| script body | server us per call |\n| --- | ---: |")
    for name, us in figures.items():
        print(f"| {name} | {us:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

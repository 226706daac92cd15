"""The resale score's shared signals across processes: two uvicorn replicas on one real
redis-server, each serving half of one key's fan-out (four networks each, under the
networks signal's allow), both flag the key once their once-a-second batches have pooled the
eight networks. Each replica alone cannot: the in-process test
(``tests/resale/test_shared.py``) shows that step by step on a manual clock."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from tests.store.conftest import empty_redis_store
from tests.store.redis_replica import replicas
from tests.test_cli import POLICY_YAML, Cli, write_pepper

pytestmark = pytest.mark.anyio

RESALE = """\
client_address:
  trusted_proxies: ["127.0.0.1/32"]
resale:
  mode: enforce
  flag_header: true
  thresholds: {flag: 15, throttle: null, block: null, suspend: null}
"""


async def test_two_replica_processes_flag_a_fan_out_neither_sees_whole(
        redis_port: int, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    await (await empty_redis_store(redis_port)).close()
    pepper = write_pepper(tmp_path / "pepper")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY_YAML.format(pepper=pepper) + RESALE)
    key, _ = Cli(tmp_path, policy_file, url).create("globex")
    async with replicas(2, url, policy_file) as bases:
        auth = {"authorization": f"Bearer {key}"}

        async def send(client: httpx.AsyncClient, replica: int, network: int) -> str | None:
            answer = await client.get(f"{bases[replica]}/v1/chat/completions",
                                      headers={**auth, "x-forwarded-for": f"198.18.{network}.7"})
            assert answer.status_code == 200, answer.text
            found: str | None = answer.headers.get("x-gatekeeper-resale")
            return found

        async with httpx.AsyncClient(timeout=30) as client:
            for network in range(4):
                await send(client, 0, network)
                await send(client, 1, network + 4)
            # each replica keeps using its own four networks; within a few batches both
            # count eight
            flagged = [False, False]
            with anyio.fail_after(30):
                while not all(flagged):
                    for replica in (0, 1):
                        flagged[replica] |= await send(client, replica, 4 * replica) == "flag"
                    await anyio.sleep(0.2)

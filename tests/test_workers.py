"""Several workers each count limits alone: gatekeeper reads the count the server was given
and says so at startup; a real `uvicorn --workers 2` shows the warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gatekeeper import Gatekeeper, MemoryStore
from gatekeeper.workers import declared_workers
from tests.conftest import PEPPER, Recorder
from tests.serving import UvicornProcess


@pytest.mark.parametrize(("argv", "env", "count"), [
    (["uvicorn", "app:app"], {}, 1),
    (["uvicorn", "app:app", "--workers", "4"], {}, 4),
    (["uvicorn", "app:app", "--workers=3"], {}, 3),
    (["gunicorn", "-w", "2", "app:app"], {}, 2),
    (["gunicorn", "-w5", "app:app"], {}, 5),
    (["gunicorn", "app:app"], {"GUNICORN_CMD_ARGS": "--bind 0:80 --workers 6"}, 6),
    (["uvicorn", "app:app"], {"WEB_CONCURRENCY": "8"}, 8),
    (["uvicorn", "app:app", "--workers", "many"], {"WEB_CONCURRENCY": "x"}, 1),
    (["gunicorn", "app:app"], {"GUNICORN_CMD_ARGS": "--workers 'unclosed"}, 1),
])
def test_the_declared_worker_count(argv: list[str], env: dict[str, str], count: int) -> None:
    assert declared_workers(argv, env) == count


@pytest.mark.anyio
async def test_startup_warns_when_several_workers_count_alone(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = {"tenants": {"acme": {"limits": {"requests": "60/minute"}}}}
    for workers, warned in (("1", False), ("3", True)):
        monkeypatch.setenv("WEB_CONCURRENCY", workers)
        caplog.clear()
        gk = Gatekeeper(Recorder(), policy, store=MemoryStore(), pepper=PEPPER)
        with caplog.at_level(logging.WARNING, logger="gatekeeper"):
            await gk.startup()
        assert any("3 worker processes each count limits alone" in r.getMessage()
                   for r in caplog.records) == warned
        await gk.shutdown()


def test_uvicorn_with_two_workers_logs_the_warning(tmp_path: Path) -> None:
    source = (  # Starlette takes part in the lifespan: startup runs in each worker
        "from starlette.applications import Starlette\n"
        "from gatekeeper import Gatekeeper, MemoryStore\n"
        "app = Gatekeeper(Starlette(), {'tenants': {'acme': {'limits': "
        "{'requests': '60/minute'}}}}, store=MemoryStore(), pepper=b'p' * 40)\n")
    with UvicornProcess(tmp_path, source, "--workers", "2", "--log-level", "warning") as server:
        seen = server.read_until(
            lambda out: out.count("worker processes each count limits alone") >= 2)
    assert "2 worker processes" in seen and "Redis store" in seen

"""The tests' own redis-server: without the binary a Redis test skips saying why, except
under CI=true, where it fails (a CI machine that lost Redis must not pass silently)."""

from __future__ import annotations

import pytest

from tests.redis_server import require_redis_server


def test_a_missing_binary_skips_locally_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        require_redis_server()
    assert "redis-server is not on PATH" in str(info.value)


def test_a_missing_binary_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as info:
        require_redis_server()
    assert "CI=true" in str(info.value)


def test_the_binary_here_is_found() -> None:
    assert require_redis_server().endswith("redis-server")

"""One exception tree with one root; each leaf carries the data that explains it."""

from __future__ import annotations

import json
from collections.abc import Iterable


class GatekeeperError(Exception):
    """Root of every error gatekeeper raises on purpose."""


class ConfigError(GatekeeperError):
    """One wrong value in a policy or setting, named by its dotted field path."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}: {_show(value)} {problem}")


class PolicyError(GatekeeperError):
    """Every problem found in one policy, so an operator fixes them in one pass."""

    def __init__(self, errors: Iterable[ConfigError], source: str = "policy") -> None:
        self.errors = tuple(errors)
        self.source = source
        lines = "\n".join(f"  {e}" for e in self.errors)
        count = len(self.errors)
        super().__init__(f"{source}: {count} error{'s' if count != 1 else ''}\n{lines}")


class StoreError(GatekeeperError):
    """The key store could not answer; the decision then follows the fail rule."""

    def __init__(self, operation: str, cause: str) -> None:
        self.operation = operation
        self.cause = cause
        super().__init__(f"store {operation} failed: {cause}")


class KeyExistsError(GatekeeperError):
    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"key {key_id} already exists")


class KeyNotFoundError(GatekeeperError):
    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"no key with id {key_id!r}")


class KeyRevokedError(GatekeeperError):
    """A write would take a key out of ``revoked``; stores refuse it whoever asks."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"key {key_id} is revoked, and revocation is for good; "
                         "issue a new key instead")


class KeyConflictError(GatekeeperError):
    """A conditional write lost a race: the key changed after it was read. Nothing was written."""

    def __init__(self, key_id: str, expected_version: int, found_version: int) -> None:
        self.key_id = key_id
        self.expected_version = expected_version
        self.found_version = found_version
        super().__init__(f"key {key_id} was changed by someone else while this change was being "
                         f"made (version {expected_version} read, {found_version} found); "
                         "nothing was written, try again")


def _show(value: object) -> str:
    """Render a wrong value the way it looked in the file, shortened so errors stay one line."""
    if value is _MISSING:
        return "(missing)"
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING = _Missing()
MISSING: object = _MISSING
"""Placeholder for a required field that is absent, so errors say ``(missing)``."""


"""One exception tree with one root; each leaf carries the data that explains it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path


class GatekeeperError(Exception):
    """Root of every error gatekeeper raises on purpose."""


class ConfigError(GatekeeperError):
    """One wrong value in a policy or setting, named by its dotted field path.

    The value is shown as it looked, with URL passwords masked, except where it may be a
    secret: ``HIDDEN`` values, and every ``*_env`` field (a secret pasted where the name of
    its environment variable belongs must not end up in a terminal or a CI log).
    """

    def __init__(self, field: str, value: object, problem: str) -> None:
        if _ENV_FIELD.search(field):
            value = HIDDEN
        self.field = field
        self.value = value
        self.problem = problem
        shown = "" if value is HIDDEN else f" {_show(value)}"
        super().__init__(f"{field}:{shown} {problem}")


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


class StoreNotFoundError(StoreError):
    """The store's file does not exist, and this store may not create it (a server would
    otherwise start on an empty store and answer ``key_unknown`` for every key)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__("open", f"{path} does not exist; create a key first with "
                                 "`gatekeeper keys create` (which creates the file), or point "
                                 "the store URL at the file the CLI uses")


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


_WIDTH = 120
_SCAN = 4096
"""Longest string prefix masked and rendered: a 4 kB password in a URL is masked whole."""


def _show(value: object) -> str:
    """Render a wrong value the way it looked in the file, shortened so errors stay one line.

    Lazily: rendering stops once the line is full, so a value that is huge, shared many
    times over (a policy dict built in Python) or holds itself costs at most a line's work.
    """
    if value is _MISSING:
        return "(missing)"
    pieces, size = [], 0
    for piece in _render(value, ()):
        pieces.append(piece)
        size += len(piece)
        if size > _WIDTH:
            break
    text = "".join(pieces)
    return text if len(text) <= _WIDTH else text[:_WIDTH - 3] + "..."


def _render(value: object, parents: tuple[int, ...]) -> Iterator[str]:
    """JSON-like pieces of ``value``; containers already being rendered show as ``[...]``."""
    if value is None or isinstance(value, bool | float):
        yield json.dumps(value)
    elif isinstance(value, int):
        yield str(value) if value.bit_length() <= 256 else f"(a {value.bit_length()}-bit number)"
    elif isinstance(value, str):
        yield _string(value)
    elif isinstance(value, Mapping | list | tuple | set | frozenset):
        mapping = isinstance(value, Mapping)
        if id(value) in parents:
            yield "{...}" if mapping else "[...]"
            return
        inside = (*parents, id(value))
        yield "{" if mapping else "["
        items = value.items() if isinstance(value, Mapping) else ((None, v) for v in value)
        for i, (key, item) in enumerate(items):
            yield ", " if i else ""
            if mapping:
                yield _string(str(key)) + ": "
            yield from _render(item, inside)
        yield "}" if mapping else "]"
    else:
        yield _string(str(value))


def _string(text: str) -> str:
    return redact_url(json.dumps(text[:_SCAN], ensure_ascii=False))


class _Placeholder:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_MISSING = _Placeholder("(missing)")
MISSING: object = _MISSING
"""Placeholder for a required field that is absent, so errors say ``(missing)``."""
HIDDEN: object = _Placeholder("(not shown)")
"""Placeholder for a value that may be a secret: the error names the field only."""
_ENV_FIELD = re.compile(r"_env(\[\d+\])?$")


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s\"'<>]*)@")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pass|pwd|secret|token|key)=)[^&;#\s\"']*")


def redact_url(text: str) -> str:
    """``redis://user:pw@host/0?password=pw`` -> ``redis://user:***@host/0?password=***``.

    The user part runs to the last ``@``, so a password holding ``/`` or ``@`` is masked
    whole; a lone user part (``redis://token@host``) is masked as a whole too.
    """
    def userinfo(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user + ':***' if colon else '***'}@"

    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(userinfo, text))

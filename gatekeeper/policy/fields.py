"""A reader for one mapping of the policy that records field-named errors instead of raising.

Every section loader reads through a ``Fields``; at the end the loader raises one
``PolicyError`` listing every wrong value with its dotted path, and unknown fields are errors
too (a typo in a security policy must not silently widen it).
"""

from __future__ import annotations

import difflib
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from gatekeeper.errors import HIDDEN, MISSING, ConfigError

T = TypeVar("T")
_UNSET: Any = object()


class Fields:
    def __init__(self, data: object, path: str, errors: list[ConfigError]) -> None:
        self.path = path
        self.errors = errors
        self._seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.error_here(data, "must be a mapping")
            data = {}
        self._data: Mapping[Any, Any] = data

    def field(self, name: str) -> str:
        name = _shown_name(name)
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, value: object, problem: str) -> None:
        self.errors.append(ConfigError(self.field(name), _redacted(value), problem))

    def error_here(self, value: object, problem: str) -> None:
        self.errors.append(ConfigError(self.path or "(top level)", _redacted(value), problem))

    def has(self, name: str) -> bool:
        return name in self._data

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: Any = _UNSET,
            what: str = "") -> Any:
        """The value of ``name`` if it has the right type; else an error and ``default``."""
        self._seen.add(name)
        if name not in self._data or self._data[name] is None:
            if default is _UNSET:
                self.error(name, MISSING, "is required")
                return None
            return default
        value = self._data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # YAML's `yes` is a bool, and a bool is an int: it must not pass as a number
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            self.error(name, value, f"must be {what or _describe(kinds)}")
            return default if default is not _UNSET else None
        return value

    def number(self, name: str, default: float, minimum: float = 0.0,
               maximum: float | None = None) -> float:
        value = self.get(name, (int, float), default, "a number")
        if value is None:
            return default
        if value != value or value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else \
                f"at least {minimum:g}"
            self.error(name, value, f"must be {bound}")
            return default
        return float(value)

    def whole(self, name: str, minimum: int, maximum: int) -> int | None:
        """An optional whole number in ``minimum..maximum``; ``None`` when absent or wrong."""
        value = self.get(name, int, None, "a whole number")
        if value is None:
            return None
        if not minimum <= value <= maximum:
            self.error(name, value, f"must be between {minimum} and {maximum}")
            return None
        return int(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            self.error(name, value, f"must be one of {', '.join(choices)}")
            return default
        return str(value)

    def str_list(self, name: str, parse: Callable[[str], T] | None = None,
                 problem: str = "is not valid") -> list[Any]:
        """A list of strings, each optionally parsed; a bad item is named by its index."""
        raw = self.get(name, (list, str), [], "a list of strings")
        if isinstance(raw, str):
            raw = [raw]
        out: list[Any] = []
        for i, item in enumerate(raw):
            where = f"{name}[{i}]"
            if not isinstance(item, str):
                self.error(where, item, "must be a string")
                continue
            if parse is None:
                out.append(item)
                continue
            try:
                out.append(parse(item))
            except (ValueError, TypeError):
                self.error(where, item, problem)
        return out

    def section(self, name: str) -> Fields:
        self._seen.add(name)
        return Fields(self._data.get(name), self.field(name), self.errors)

    def entries(self, name: str) -> Iterator[tuple[str, Fields]]:
        """The named mapping's entries, each as its own ``Fields`` (e.g. tenants by name)."""
        outer = self.section(name)
        for key, value in outer.items():
            yield key, Fields(value, outer.field(key), self.errors)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every entry of this mapping as raw values (e.g. PEM keys by key id)."""
        for key, value in self._data.items():
            if not isinstance(key, str) or not key:
                self.error_here(key, "has a name that is not a non-empty string")
                continue
            self._seen.add(key)
            yield key, value

    def finish(self) -> None:
        """Record every field this section did not read as unknown. Its value is not shown:
        an unknown field is where a secret pasted in the wrong place ends up (``pepper:``)."""
        for key in self._data:
            if key not in self._seen:
                near = difflib.get_close_matches(str(key), sorted(self._seen), n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                value = _redacted(self._data[key])  # say so if it is a private key
                self.error(str(key), value if value is _PRIVATE else HIDDEN,
                           f"is not a known field{hint}")


def _shown_name(name: str) -> str:
    """A name from the file (a tenant, an unknown field) as an operator can find it: quoted
    when it is empty or holds a control character (a newline would split the one-line error)."""
    if name and name.isprintable():
        return name
    return json.dumps(name)


_PRIVATE = "(private key)"
_INSPECT = 1000
"""Containers and strings looked at for a private key; a larger value is not shown at all."""


def _redacted(value: object) -> object:
    """A private key pasted in the wrong place (a typo'd field, a bare string) is never echoed:
    neither a PEM nor a JWK with a private (``d``) or symmetric (``k``) part, at any depth."""
    stack, seen = [value], set()
    for _ in range(_INSPECT):
        if not stack:
            return value
        node = stack.pop()
        if (isinstance(node, str) and "PRIVATE KEY" in node) or \
                (isinstance(node, bytes) and b"PRIVATE KEY" in node):
            return _PRIVATE
        if isinstance(node, Mapping | list | tuple | set | frozenset) and id(node) not in seen:
            seen.add(id(node))  # shared and self-holding containers are looked at once
            if isinstance(node, Mapping):
                if "kty" in node and ("d" in node or "k" in node):
                    return _PRIVATE
                stack.extend(itertools.islice(node.keys(), _INSPECT))
                node = node.values()
            stack.extend(itertools.islice(node, _INSPECT))
    return value if not stack else HIDDEN


def _describe(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)

"""Which paths gatekeeper guards. Compiled once to tuples so the check is two C-level calls."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from gatekeeper.policy.fields import Fields
from gatekeeper.types import Scope

_TRAVERSAL = ("//", "/./", "/../")


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    protect: tuple[str, ...] = ("/*",)
    public: tuple[str, ...] = ()
    _protect_exact: frozenset[str] = frozenset()
    _protect_prefix: tuple[str, ...] = ("/",)
    _public_exact: frozenset[str] = frozenset()
    _public_prefix: tuple[str, ...] = ()

    @classmethod
    def compile(cls, protect: tuple[str, ...], public: tuple[str, ...]) -> RoutePolicy:
        pe, pp = _split(protect)
        ue, up = _split(public)
        return cls(protect, public, pe, pp, ue, up)

    def is_protected(self, path: str) -> bool:
        if self._guards(path):
            return True
        # Something behind us (a router, a proxying app's HTTP client) may decode or normalise
        # the path once more: '/healthz/../v1/x', '//v1/x' or '/%761/x' must not walk around a
        # '/v1/*' guard. Only odd paths pay for this.
        return ("%" in path or irregular(path)) and self._guards(normalise(path))

    def _guards(self, path: str) -> bool:
        if not (path in self._protect_exact or path.startswith(self._protect_prefix)):
            return False
        if path in self._public_exact or path.startswith(self._public_prefix):
            # A public prefix must not become a way around the guard: '/health/../v1/x'
            # or '//v1/x' may be normalised by something behind us.
            return irregular(path)
        return True


def _split(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact, prefixes = set(), []
    for p in patterns:
        if p.endswith("*"):
            base = p[:-1]
            prefixes.append(base)
            if base.endswith("/") and len(base) > 1:
                exact.add(base[:-1])  # '/v1/*' covers '/v1' too
        else:
            exact.add(p)
    return frozenset(exact), tuple(prefixes)


def route_path(scope: Scope) -> str:
    """The path below the mount point (``root_path``): what the app behind routes on.

    Patterns are relative to where gatekeeper is mounted; the full path is checked too, so a
    policy written for either view guards the same requests.
    """
    path: str = scope["path"]
    root = scope.get("root_path")
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path


def irregular(path: str) -> bool:
    return any(t in path for t in _TRAVERSAL) or path.endswith(("/..", "/."))


def normalise(path: str) -> str:
    """Percent-decoded once, empty and '.' segments dropped, '..' applied: RFC 3986 style."""
    decoded = unquote(path)
    parts: list[str] = []
    for part in decoded.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    trailing = bool(parts) and decoded.endswith(("/", "/.", "/.."))
    return "/" + "/".join(parts) + ("/" if trailing else "")


def _pattern(text: str) -> str:
    if not text.startswith("/") or "*" in text[:-1] or any(c.isspace() for c in text):
        raise ValueError(text)
    return text


def load_routes(fields: Fields) -> RoutePolicy:
    protect = fields.str_list("protect", _pattern,
                              "is not a path pattern ('/exact' or '/prefix/*')") \
        if fields.has("protect") else ["/*"]
    public = fields.str_list("public", _pattern, "is not a path pattern ('/exact' or '/prefix/*')")
    fields.finish()
    return RoutePolicy.compile(tuple(protect), tuple(public))

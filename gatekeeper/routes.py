"""Which paths gatekeeper guards. Compiled once to tuples so the check is two C-level calls.

A request-target is canonicalised before it is matched: uvicorn's h11 backend hands an
absolute-form target (``GET http://host/v1/x``) or a slash-less one (``GET v1/x``) to the app
as ``scope["path"]`` unchanged, and a forwarding app behind us may still serve it. Such
targets are re-rooted; ``*`` (``OPTIONS *``) and CONNECT's ``host:port`` have no path and
are refused.

A path is then looked at in up to two views: as sent, and -- when it is odd (percent-escapes,
dot segments, doubled slashes, backslashes, ``;parameters``, capitals) -- as something behind
us might resolve it: decoded once, ``;params`` stripped from each segment, dot segments
applied, backslashes read as slashes and folded to lower case. A path protected in either view
is protected. Public patterns match only the exact spelling, so no spelling widens them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from gatekeeper.types import Scope

_TRAVERSAL = ("//", "/./", "/../")
_SCHEME_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


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
        # A folded view is lower case: protect patterns match it lower-cased too. Public ones
        # are not folded, so a capital never makes a path public.
        pe, pp = _split(protect + tuple(p.lower() for p in protect if p != p.lower()))
        ue, up = _split(public)
        return cls(protect, public, pe, pp, ue, up)

    def answer(self, target: str, root_path: str = "") -> str | None:
        """For a request-target: the canonical path below the mount when it is guarded, ''
        when it is not, None when it names no path at all.

        ``root_path`` is where gatekeeper is mounted: patterns are relative to it, and the
        full path is checked too (a policy written for either view guards the same
        requests), except where the path below the mount is public by name.
        """
        full = canonical_target(target)
        if full is None:
            return None
        below = full
        if root_path and full.startswith(root_path):
            below = full[len(root_path):] or "/"
        if self.is_protected(below) or (
                below is not full and not self._is_public(below) and self.is_protected(full)):
            return below
        return ""

    def is_protected(self, path: str) -> bool:
        """Whether an origin-form path is guarded, in any view of it (see the module text)."""
        if self._guards(path):
            return True
        # Something behind us (a router, a proxying app's HTTP client) may decode or normalise
        # the path once more: '/healthz/../v1/x', '//v1/x', '/%761/x', '/V1/x' or '/v1;x/y'
        # must not walk around a '/v1/*' guard. Only odd paths pay for this.
        return odd(path) and self._guards(fold(path))

    def _guards(self, path: str) -> bool:
        if not (path in self._protect_exact or path.startswith(self._protect_prefix)):
            return False
        if self._is_public(path):
            # A public prefix must not become a way around the guard: '/health/../v1/x'
            # or '//v1/x' may be normalised by something behind us.
            return irregular(path)
        return True

    def _is_public(self, path: str) -> bool:
        return path in self._public_exact or path.startswith(self._public_prefix)


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


def canonical_target(target: str) -> str | None:
    """The origin-form path a request-target names; None when it names none."""
    if not target.startswith("/"):
        found = _SCHEME_AUTHORITY.match(target)
        if found is not None:  # absolute-form: the path after scheme and authority
            target = target[found.end():] or "/"
            if not target.startswith("/"):
                return None  # 'http://host?x' or similar: no path
        elif not target or target == "*" or ("/" not in target and ":" in target):
            return None  # asterisk-form, CONNECT's authority-form, nothing at all
        else:
            target = "/" + target  # slash-less: what a lenient router behind us would see
    return target


def irregular(path: str) -> bool:
    return any(t in path for t in _TRAVERSAL) or path.endswith(("/..", "/."))


def odd(path: str) -> bool:
    """Whether something behind us might read ``path`` as another path."""
    return "%" in path or ";" in path or "\\" in path or irregular(path) or \
        path != path.lower()


def fold(path: str) -> str:
    """The view of a lenient server behind us: normalised, backslashes as slashes, lower case."""
    return normalise(path.replace("\\", "/"), strip_params=True).lower()


def normalise(path: str, strip_params: bool = False) -> str:
    """Percent-decoded once, empty and '.' segments dropped, '..' applied: RFC 3986 style.

    ``strip_params`` also drops ``;parameters`` from each segment, as Java servlet containers
    and some proxies do.
    """
    decoded = unquote(path)
    parts: list[str] = []
    for part in decoded.split("/"):
        if strip_params:
            part = part.split(";", 1)[0]
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    trailing = bool(parts) and decoded.endswith(("/", "/.", "/.."))
    return "/" + "/".join(parts) + ("/" if trailing else "")

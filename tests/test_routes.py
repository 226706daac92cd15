"""Which paths are guarded: '/v1/*' covers '/v1', public paths pass, and no spelling of a
path (double slashes, dot segments, percent-encoding, case) turns a guarded path public."""

from __future__ import annotations

import itertools
import posixpath
import re
from typing import Any
from urllib.parse import unquote

import pytest

from gatekeeper import Gatekeeper, MemoryStore, PolicyError, compile_policy
from gatekeeper.routes import RoutePolicy
from tests.conftest import Recorder, asgi_request

V1 = RoutePolicy.compile(("/v1/*",), ("/healthz",))
ALL = RoutePolicy.compile(("/*",), ("/healthz", "/static/*"))
PEPPER = b"routes-pepper-0123456789abcdefghijkl"


# --- what the patterns mean ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1", "/v1/", "/v1/chat/completions", "/v1/models",
                                  "/v1/embeddings", "/v1/a/b/c/d"])
def test_prefix_pattern_protects_its_base_and_everything_below(path: str) -> None:
    assert V1.is_protected(path)


@pytest.mark.parametrize("path", ["/", "/healthz", "/v10/x", "/v1x", "/v1-beta/x", "/v2/x",
                                  "/metrics", "/docs"])
def test_outside_the_prefix_is_not_protected(path: str) -> None:
    assert not V1.is_protected(path)


def test_public_paths_pass_and_neighbours_do_not() -> None:
    assert not ALL.is_protected("/healthz")
    assert not ALL.is_protected("/static/app.css")
    assert not ALL.is_protected("/static/img/logo.png")
    assert not ALL.is_protected("/static")  # '/static/*' covers its base, as protect does
    for path in ("/", "/healthzz", "/healthz/", "/healthz/x", "/staticx/a",
                 "/v1/chat/completions", "/anything"):
        assert ALL.is_protected(path), path


def test_an_exact_protect_pattern_is_exact() -> None:
    routes = RoutePolicy.compile(("/admin", "/v1/*"), ())
    assert routes.is_protected("/admin")
    assert not routes.is_protected("/admin/x")
    assert not routes.is_protected("/administrator")
    assert routes.is_protected("/v1")


def test_default_policy_protects_everything() -> None:
    routes = RoutePolicy()
    for path in ("/", "/healthz", "/v1/chat/completions", "/x/y"):
        assert routes.is_protected(path)
    assert compile_policy({}).routes.is_protected("/healthz")


def test_a_public_path_inside_a_protected_prefix() -> None:
    routes = RoutePolicy.compile(("/v1/*",), ("/v1/models",))
    assert not routes.is_protected("/v1/models")
    assert routes.is_protected("/v1/models/gpt-4o")
    assert routes.is_protected("/v1/chat/completions")
    assert routes.is_protected("/v1/./models/../chat/completions")


# --- path tricks never make a protected path public ------------------------------------------

@pytest.mark.parametrize("path", [
    "//v1/chat/completions",
    "///v1/chat/completions",
    "/./v1/chat/completions",
    "/healthz/../v1/chat/completions",
    "/healthz/../v1",
    "/healthz/../v1/",
    "/v2/../v1/models",
    "/x/../../v1/models",  # '..' above the root stays at the root
    "/healthz/./../v1/x",
    "/.//v1/x",
    "/%761/chat/completions",  # %76 = 'v'
    "/%2Fv1/chat/completions",
    "/v1%2Fchat%2Fcompletions",
    "/healthz/%2e%2e/v1/chat/completions",
    "/healthz/%2E%2E/v1/chat/completions",
    "/healthz/.%2e/v1/models",
    "/healthz%2F..%2Fv1%2Fmodels",
    "/%2e/v1/models",
])
def test_spellings_that_resolve_into_v1_stay_protected(path: str) -> None:
    assert V1.is_protected(path)


@pytest.mark.parametrize("path", [
    "//healthz",
    "/./healthz",
    "/healthz/.",
    "/healthz/./",
    "/healthz/../healthz",
    "/healthz/..",
    "/healthz/../v1/x",
    "/static/../v1/x",
    "/static/./a.css",
    "/static//a.css",
    "/static/../../etc/passwd",
    "/HEALTHZ",  # public patterns are exact: case never widens them
    "/Healthz",
    "/STATIC/a.css",
    "/%68ealthz",  # %68 = 'h'
    "/healthz%2F",
    "/static%2F..%2Fv1",
    "/healthz;x=1",
    "/healthz\\..\\v1",
])
def test_irregular_spellings_of_public_paths_are_protected_when_everything_is(path: str) -> None:
    assert ALL.is_protected(path)


@pytest.mark.parametrize("path", ["/healthz", "/./healthz", "//healthz", "/x/../healthz",
                                  "/%68ealthz"])
def test_paths_that_resolve_to_public_ones_outside_v1_are_not_guarded(path: str) -> None:
    # Not guarded either way: only a path that resolves into '/v1' must be guarded.
    assert not V1.is_protected(path)


def _resolve(path: str) -> str:
    """An independent resolver: decode once, merge slashes, apply dot segments."""
    decoded = unquote(path)
    merged = re.sub("/+", "/", decoded)
    resolved = posixpath.normpath(merged)
    if resolved != "/" and merged.endswith(("/", "/.", "/..")):
        resolved += "/"
    return resolved


SEGMENTS = ["", ".", "..", "v1", "healthz", "static", "chat", "%2e%2e", "%2F", "%76%31", "V1",
            "a.css"]


@pytest.mark.parametrize("routes", [V1, ALL, RoutePolicy.compile(("/v1/*",), ("/v1/models",))])
def test_no_combination_of_segments_makes_a_protected_path_public(routes: RoutePolicy) -> None:
    checked = 0
    for n in range(1, 5):
        for parts in itertools.product(SEGMENTS, repeat=n):
            path = "/" + "/".join(parts)
            if routes.is_protected(_resolve(path)):
                checked += 1
                assert routes.is_protected(path), (path, _resolve(path))
    assert checked > 1000


@pytest.mark.parametrize("path", ["/healthz", "/static/app.css", "/v2/models", "/docs",
                                  "/static/a%20b.css"])
def test_regular_unprotected_paths_are_unaffected(path: str) -> None:
    routes = RoutePolicy.compile(("/v1/*",), ("/healthz", "/static/*"))
    assert not routes.is_protected(path)


# --- from the policy ------------------------------------------------------------------------

def test_routes_come_from_the_policy() -> None:
    policy = compile_policy({"routes": {"protect": ["/v1/*"], "public": ["/healthz"]}})
    assert policy.routes.protect == ("/v1/*",)
    assert policy.routes.public == ("/healthz",)
    assert policy.routes.is_protected("/v1/chat/completions")
    assert policy.routes.is_protected("/healthz/../v1/chat/completions")
    assert not policy.routes.is_protected("/healthz")


def test_a_single_string_is_a_one_item_list() -> None:
    policy = compile_policy({"routes": {"protect": "/v1/*"}})
    assert policy.routes.protect == ("/v1/*",)


@pytest.mark.parametrize(("routes", "field"), [
    ({"protect": ["v1/*"]}, "routes.protect[0]"),
    ({"protect": ["/v1/*/chat"]}, "routes.protect[0]"),
    ({"protect": ["/v1/*", "/a b"]}, "routes.protect[1]"),
    ({"public": ["healthz"]}, "routes.public[0]"),
    ({"public": [7]}, "routes.public[0]"),
    ({"protect": "/v1/*", "publik": ["/healthz"]}, "routes.publik"),
])
def test_bad_patterns_are_policy_errors_naming_the_field(routes: dict[str, Any],
                                                        field: str) -> None:
    with pytest.raises(PolicyError) as info:
        compile_policy({"routes": routes})
    assert [e.field for e in info.value.errors] == [field]
    assert field in str(info.value)


# --- through the middleware: a guarded path never reaches the app ----------------------------

async def call(app: Any, path: str) -> int:
    sent = await asgi_request(app, path)
    status: int = sent[0]["status"]
    return status


@pytest.mark.anyio
async def test_middleware_refuses_tricky_paths_without_a_key() -> None:
    upstream = Recorder()
    gk = Gatekeeper(upstream, {"routes": {"protect": ["/v1/*"], "public": ["/healthz"]},
                               "tenants": {"acme": {}}},
                    store=MemoryStore(), pepper=PEPPER)
    assert await call(gk, "/healthz") == 200
    assert await call(gk, "/v2/other") == 200
    for path in ("/v1/models", "/healthz/../v1/models", "//v1/models", "/./v1/models",
                 "/%761/models"):
        assert await call(gk, path) == 401, path
    assert upstream.paths == ["/healthz", "/v2/other"]

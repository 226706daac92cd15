"""Responder: the request body replayed within a limit, headers added, usage read as the body
streams past, settle exactly once however the exchange ends. Real Starlette apps, the demo
upstream, a real uvicorn on a loopback port; no mocks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gatekeeper.demo.upstream import create_upstream
from gatekeeper.responder import (
    CANCELLED,
    COMPLETE,
    DISCONNECT,
    ERROR,
    LOWERED_NAMES,
    USAGE_BUFFER_LIMIT,
    ClientDisconnected,
    Responder,
    Settle,
)
from gatekeeper.types import ASGIApp, Message, Receive, Scope, Send
from gatekeeper.usage import MAX_TOKENS, Usage, parse_usage, read_usage

pytestmark = pytest.mark.anyio

OURS = ((b"x-ratelimit-remaining-tokens", b"41"), (b"x-gatekeeper", b"1"))
LIMIT = 512 * 1024
USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
USAGE_JSON = json.dumps({"usage": USAGE}).encode()
SSE = (b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
       b'data: {"id":"c1","choices":[],"usage":' + json.dumps(USAGE).encode() + b'}\n\n'
       b"data: [DONE]\n\n")


class Settlements:
    """A settle callback that counts; ``wait`` makes it await something first, ``fail`` raise."""

    def __init__(self, wait: float = 0.0, fail: bool = False) -> None:
        self.wait = wait
        self.fail = fail
        self.seen: list[tuple[str, int | None, Usage | None]] = []

    async def __call__(self, responder: Responder) -> None:
        if self.wait:
            await anyio.sleep(self.wait)
        if self.fail:
            raise RuntimeError("store down")
        self.seen.append((responder.outcome, responder.status, responder.usage))


class Guarded:
    """The wiring the middleware will do, in test form: read the body within ``limit`` (413 past
    it), then run the app through a Responder that adds headers, watches usage and settles."""

    def __init__(self, app: ASGIApp, *, limit: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.settlements = Settlements()
        self.responders: list[Responder] = []
        self.finished = 0
        self.pulled = 0
        self.messages = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            self.pulled += len(message.get("body", b""))
            self.messages += 1
            return message

        responder = Responder(counted, send, headers=OURS, watch_usage=True,
                              settle=self.settlements)
        self.responders.append(responder)
        try:
            if self.limit is not None and await responder.read_body(self.limit) is None:
                await responder.send({"type": "http.response.start", "status": 413,
                                      "headers": [(b"content-type", b"text/plain")]})
                await responder.send({"type": "http.response.body", "body": b"too large"})
                return
            await responder.run(self.app, scope)
        finally:
            self.finished += 1

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self),
                                 base_url="http://upstream.test")


class Peer:
    """The server side of one in-process exchange: request messages in, response messages out.
    After the body, ``receive`` blocks (as a server's does) or reports a disconnect."""

    def __init__(self, *pieces: bytes, disconnect_after: float | None = None,
                 fail_send_at: int | None = None) -> None:
        pieces = pieces or (b"",)
        self.incoming: list[Message] = [
            {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
            for i, p in enumerate(pieces)]
        self.disconnect_after = disconnect_after
        self.fail_send_at = fail_send_at
        self.sent: list[Message] = []
        self.pulled = 0

    async def receive(self) -> Message:
        if self.incoming:
            message = self.incoming.pop(0)
            self.pulled += len(message["body"])
            return message
        if self.disconnect_after is None:
            with anyio.fail_after(5):  # a test never waits this long: the app hangs
                await anyio.sleep_forever()
        await anyio.sleep(self.disconnect_after or 0)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.fail_send_at is not None and len(self.sent) >= self.fail_send_at:
            raise OSError("connection reset by peer")
        self.sent.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def http_scope(path: str = "/", method: str = "POST", spec_version: str = "2.3",
               **extra: Any) -> Scope:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": spec_version},
            "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"upstream.test")], "client": ("192.0.2.10", 40000),
            "server": ("upstream.test", 80), **extra}


def raw_app(*bodies: bytes, content_type: bytes = b"text/event-stream",
            extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> ASGIApp:
    """A hand-written app sending ``bodies`` as separate body messages, then an empty last one."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type), *extra_headers]})
        for body in bodies:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type="application/octet-stream", headers={
        "x-sha256": hashlib.sha256(body).hexdigest(),
        "x-transfer-encoding": request.headers.get("transfer-encoding", "")})


ECHO = Starlette(routes=[Route("/echo", echo, methods=["POST"])])


def sse_app(events: Callable[[], AsyncIterator[bytes]]) -> ASGIApp:
    async def endpoint(request: Request) -> Response:
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-gatekeeper": "set by the app", "x-app": "kept"})

    return Starlette(routes=[Route("/sse", endpoint)])


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


class Served:
    """One uvicorn for the module; each test mounts its own app."""

    def __init__(self) -> None:
        self.app: ASGIApp = ECHO
        self.base = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    holder = Served()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    holder.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(holder, interface="asgi3", lifespan="off",
                                          log_level="warning", proxy_headers=False,
                                          timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    eventually(lambda: server.started, timeout=10)
    try:
        yield holder
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# Request body: read within a limit, replayed byte for byte.

async def test_body_read_across_messages_is_replayed_to_the_app_unchanged() -> None:
    body = os.urandom(100_000)
    peer = Peer(*(body[i:i + 7_000] for i in range(0, len(body), 7_000)))
    responder = Responder(peer.receive, peer.send)
    assert await responder.read_body(LIMIT) == body
    await responder.run(ECHO, http_scope("/echo"))
    assert peer.sent[0]["status"] == 200
    assert dict(peer.sent[0]["headers"])[b"x-sha256"] == hashlib.sha256(body).hexdigest().encode()
    assert peer.body == body
    assert responder.outcome == COMPLETE


def test_chunked_upload_over_uvicorn_is_replayed_byte_for_byte(served: Served) -> None:
    served.app = guarded = Guarded(ECHO, limit=LIMIT)
    data = os.urandom(400_000)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 8_192):
            yield data[i:i + 8_192]
            time.sleep(0.0005)  # so the server sees several body messages

    response = httpx.post(f"{served.base}/echo", content=pieces(), timeout=10)
    assert response.status_code == 200
    assert response.headers["x-transfer-encoding"] == "chunked"
    assert response.content == data
    assert response.headers["x-sha256"] == hashlib.sha256(data).hexdigest()
    assert guarded.messages > 1
    eventually(lambda: guarded.finished == 1)  # the client may have its answer before we settle
    assert guarded.settlements.seen == [(COMPLETE, 200, None)]


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT, LIMIT + 1])
async def test_body_at_the_limit_is_read_one_byte_over_is_refused(size: int) -> None:
    body = b"x" * size
    responder = Responder(Peer(body[:size // 2], body[size // 2:]).receive, Peer().send)
    assert await responder.read_body(LIMIT) == (body if size <= LIMIT else None)


async def test_over_limit_body_stops_reading_within_one_chunk_of_the_limit() -> None:
    chunk = 16 * 1024
    peer = Peer(*[b"y" * chunk] * 64)
    responder = Responder(peer.receive, peer.send)
    assert await responder.read_body(100_000) is None
    assert 100_000 < peer.pulled <= 100_000 + chunk
    assert len(peer.incoming) == 64 - 7  # the rest was never asked for


def test_over_limit_chunked_upload_over_uvicorn_gets_413(served: Served) -> None:
    served.app = guarded = Guarded(ECHO, limit=LIMIT)

    def pieces() -> Iterator[bytes]:
        for _ in range(64):
            yield b"z" * 32_768

    try:
        response = httpx.post(f"{served.base}/echo", content=pieces(), timeout=10)
        assert response.status_code == 413
    except httpx.TransportError:
        pass  # the server may close before the client has finished writing: also refused
    eventually(lambda: guarded.finished == 1)
    assert guarded.settlements.seen == [(COMPLETE, 413, None)]
    assert guarded.pulled < 64 * 32_768


async def test_disconnect_while_reading_the_body_raises_and_settles_once() -> None:
    settle = Settlements()
    peer = Peer(b"partial", disconnect_after=0)
    peer.incoming[0]["more_body"] = True
    responder = Responder(peer.receive, peer.send, settle=settle)
    with pytest.raises(ClientDisconnected) as caught:
        await responder.read_body(LIMIT)
    assert caught.value.received == len(b"partial")
    assert settle.seen == [(DISCONNECT, None, None)]


# Headers added to the response: ours win, once.

def test_headers_reach_a_client_on_an_sse_stream_over_uvicorn_unbuffered(served: Served) -> None:
    client_saw_first = threading.Event()
    waited: list[bool] = []

    async def events() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        deadline = anyio.current_time() + 5
        while not client_saw_first.is_set() and anyio.current_time() < deadline:
            await anyio.sleep(0.005)
        waited.append(client_saw_first.is_set())
        yield b"data: 2\n\n"

    served.app = guarded = Guarded(sse_app(events))
    with httpx.Client(timeout=10) as client, client.stream("GET", f"{served.base}/sse") as r:
        assert r.headers.get_list("x-gatekeeper") == ["1"]
        assert r.headers["x-ratelimit-remaining-tokens"] == "41"
        assert r.headers["x-app"] == "kept"
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == "data: 1"  # before the app sends its second event
        client_saw_first.set()
        assert [line for line in lines if line] == ["data: 2"]
    assert waited == [True]
    eventually(lambda: guarded.finished == 1)
    assert guarded.settlements.seen == [(COMPLETE, 200, None)]


async def test_headers_added_to_a_json_response() -> None:
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"ok": True}, headers={"X-Gatekeeper": "set by the app", "x-app": "1"})

    guarded = Guarded(Starlette(routes=[Route("/j", endpoint)]))
    async with guarded.client() as client:
        response = await client.get("/j")
    assert response.json() == {"ok": True}
    assert response.headers.get_list("x-gatekeeper") == ["1"]
    assert response.headers["x-ratelimit-remaining-tokens"] == "41"
    assert response.headers["x-app"] == "1"
    assert response.headers["content-length"] == str(len(response.content))


async def test_without_headers_to_add_every_message_is_forwarded_as_is() -> None:
    sent_by_app: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in ({"type": "http.response.start", "status": 200, "headers": []},
                        {"type": "http.response.body", "body": b"a", "more_body": True},
                        {"type": "http.response.body", "body": b"b"}):
            sent_by_app.append(message)
            await send(message)

    peer = Peer()
    await Responder(peer.receive, peer.send, watch_usage=True).run(app, http_scope())
    assert len(peer.sent) == 3
    assert all(a is b for a, b in zip(peer.sent, sent_by_app, strict=True))


# Usage: read as it streams past, never changing what is sent.

@pytest.mark.parametrize("include_usage", [True, False])
async def test_usage_from_the_demo_upstream_sse_stream(include_usage: bool) -> None:
    guarded = Guarded(create_upstream())
    async with guarded.client() as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count my words"}],
            "stream": True, "stream_options": {"include_usage": include_usage}})
    events = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: {")]
    assert len(events) > 3
    (responder,) = guarded.responders
    if include_usage:
        assert responder.usage == Usage(**events[-1]["usage"])
        assert responder.usage.completion_tokens > 0
    else:
        assert responder.usage is None
    assert guarded.settlements.seen == [(COMPLETE, 200, responder.usage)]


async def test_usage_from_the_demo_upstream_json_completion() -> None:
    guarded = Guarded(create_upstream())
    async with guarded.client() as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a b c"}]})
    assert guarded.responders[0].usage == Usage(**response.json()["usage"])
    assert guarded.settlements.seen == [(COMPLETE, 200, Usage(**response.json()["usage"]))]


async def test_usage_is_read_inside_gzip_middleware_that_rewrites_the_body() -> None:
    guarded = Guarded(create_upstream())
    transport = httpx.ASGITransport(app=GZipMiddleware(guarded, minimum_size=1))
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream.test") as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a b c"}]})
    assert response.headers["content-encoding"] == "gzip"
    assert guarded.responders[0].usage == Usage(**response.json()["usage"])


async def test_headers_given_as_a_one_shot_iterable_are_all_kept() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": iter([
            (b"content-type", b"application/json"), (b"x-app", b"kept")])})
        await send({"type": "http.response.body", "body": USAGE_JSON})

    peer = Peer()
    responder = Responder(peer.receive, peer.send, headers=OURS, watch_usage=True)
    await responder.run(app, http_scope())
    assert list(peer.sent[0]["headers"]) == [
        (b"content-type", b"application/json"), (b"x-app", b"kept"), *OURS]
    assert responder.usage == Usage(**USAGE)


async def test_ours_replace_an_app_header_in_any_case_past_the_lowered_names_kept() -> None:
    """Header names are lowered once per name and the first ``LOWERED_NAMES`` kept: past
    them, and in any case, an app's header of one of our names is still replaced."""
    many = [(f"X-App-{i}".encode(), b"v") for i in range(LOWERED_NAMES + 10)]
    for spelling in (b"X-Gatekeeper", b"x-GATEKEEPER", b"x-gatekeeper"):
        peer = Peer()
        await Responder(peer.receive, peer.send, headers=OURS).run(
            raw_app(b"{}", content_type=b"application/json",
                    extra_headers=[*many, (spelling, b"from the app")]), http_scope())
        assert list(peer.sent[0]["headers"])[1:] == [*many, *OURS]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
async def test_usage_event_split_anywhere_across_body_messages(newline: bytes) -> None:
    stream = SSE.replace(b"\n", newline)
    for cut in range(1, len(stream)):
        peer = Peer()
        responder = Responder(peer.receive, peer.send, watch_usage=True)
        await responder.run(raw_app(stream[:cut], stream[cut:]), http_scope())
        assert responder.usage == Usage(**USAGE), cut
        assert peer.body == stream
    peer = Peer()
    responder = Responder(peer.receive, peer.send, watch_usage=True)
    await responder.run(raw_app(*(stream[i:i + 1] for i in range(len(stream)))), http_scope())
    assert responder.usage == Usage(**USAGE)


async def test_usage_is_known_as_soon_as_its_event_ends() -> None:
    first, usage_event, done = SSE.split(b"\n\n")[:3]
    known: list[Usage | None] = []
    responder: Responder

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        for body in (first + b"\n\n", usage_event + b"\n", b"\n", done + b"\n\n"):
            await send({"type": "http.response.body", "body": body, "more_body": True})
            known.append(responder.usage)
        await send({"type": "http.response.body", "body": b""})

    peer = Peer()
    responder = Responder(peer.receive, peer.send, watch_usage=True)
    await responder.run(app, http_scope())
    assert known == [None, None, Usage(**USAGE), Usage(**USAGE)]


def _deep(depth: int) -> bytes:
    return b'{"usage": ' + b"[" * depth + b"]" * depth + b"}"


MALFORMED = {
    "string": b'{"usage": {"prompt_tokens": "5", "completion_tokens": 7, "total_tokens": 12}}',
    "negative": b'{"usage": {"prompt_tokens": -5, "completion_tokens": 7, "total_tokens": 2}}',
    "over max": b'{"usage": {"prompt_tokens": %d, "completion_tokens": 0, "total_tokens": 0}}'
                % (MAX_TOKENS + 1),
    "bool": b'{"usage": {"prompt_tokens": true, "completion_tokens": 7, "total_tokens": 8}}',
    "float": b'{"usage": {"prompt_tokens": 5.0, "completion_tokens": 7, "total_tokens": 12}}',
    "missing": b'{"usage": {"prompt_tokens": 5, "completion_tokens": 7}}',
    "null": b'{"usage": null}',
    "list": b'{"usage": [5, 7, 12]}',
    "not an object": b'["usage"]',
    "truncated": b'{"usage": {"prompt_tokens": 5,',
    "bad utf-8": b'{"usage": "\xff\xfe"}',
    "5000 digits": b'{"usage": {"prompt_tokens": ' + b"9" * 5000 + b"}}",
    "too deep": _deep(100_000),
}


MALFORMED.update({f"{name}, compact": document.replace(b": ", b":").replace(b", ", b",")
                  for name, document in list(MALFORMED.items())})
"""The same without spaces: what a compact encoder writes, read in place (no decoder)."""


@pytest.mark.parametrize("document", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_usage_is_ignored(document: bytes) -> None:
    for app in (raw_app(document, content_type=b"application/json"),
                raw_app(b"data: " + document + b"\n\n", b"data: [DONE]\n\n")):
        peer = Peer()
        responder = Responder(peer.receive, peer.send, watch_usage=True)
        await responder.run(app, http_scope())
        assert responder.usage is None
        assert responder.outcome == COMPLETE
        assert document in peer.body


counts = st.integers(0, MAX_TOKENS + 10) | st.integers(0, 99)
separators = st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")])


@settings(max_examples=300, deadline=None)
@given(st.lists(counts, min_size=3, max_size=3), st.permutations(list(Usage._fields)),
       separators, st.sampled_from(["", ',"id":"c1"', ',"extra":{"usage":1}']))
def test_usage_read_in_place_is_what_the_json_says(
        values: list[int], order: list[str], separators: tuple[str, str], tail: str) -> None:
    usage = dict(zip(order, values, strict=True))
    document = json.dumps({"id": "x", "usage": usage}, separators=separators)
    raw = (document[:-1] + tail + "}").encode()
    assert read_usage(raw) == parse_usage(json.loads(raw))


async def test_a_malformed_event_does_not_hide_a_later_usage() -> None:
    peer = Peer()
    responder = Responder(peer.receive, peer.send, watch_usage=True)
    await responder.run(raw_app(b"data: " + MALFORMED["truncated"] + b"\n\n", SSE), http_scope())
    assert responder.usage == Usage(**USAGE)


PADDING = b" " * USAGE_BUFFER_LIMIT

UNREAD: dict[str, tuple[bytes, list[tuple[bytes, bytes]], list[bytes]]] = {
    "text/plain": (b"text/plain", [], [USAGE_JSON]),
    "problem+json": (b"application/problem+json", [], [USAGE_JSON]),
    "gzip": (b"application/json", [(b"content-encoding", b"gzip")], [USAGE_JSON]),
    "json over bound": (b"application/json", [], [b'{"pad": "', PADDING, b'", ' + USAGE_JSON[1:]]),
    "sse event over bound": (b"text/event-stream", [],
                             [b"data: " + b"x" * 1000 + b"\n"] * (USAGE_BUFFER_LIMIT // 1000 + 1)
                             + [b"\n", SSE]),
    "sse line over bound": (b"text/event-stream", [], [b": " + PADDING, b"\n\n", SSE]),
    "sse line over bound after a newline": (b"text/event-stream", [],
                                            [b"\n: " + PADDING, b"\n\n", SSE]),
    "after [DONE]": (b"text/event-stream", [], [b"data: [DONE]\n\n" + SSE]),
}


@pytest.mark.parametrize(("content_type", "headers", "bodies"), UNREAD.values(), ids=UNREAD.keys())
async def test_usage_is_not_read_past_its_bounds_or_content_type(
        content_type: bytes, headers: list[tuple[bytes, bytes]], bodies: list[bytes]) -> None:
    peer = Peer()
    responder = Responder(peer.receive, peer.send, watch_usage=True)
    await responder.run(raw_app(*bodies, content_type=content_type, extra_headers=headers),
                        http_scope())
    assert responder.usage is None
    assert peer.body == b"".join(bodies)
    assert responder.outcome == COMPLETE


# Settle: exactly once, however the exchange ends.

async def test_settles_once_when_the_last_body_is_sent_not_when_the_app_returns() -> None:
    settle = Settlements()
    seen_after_last_send: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await raw_app(SSE)(scope, receive, send)
        seen_after_last_send.append(len(settle.seen))
        await anyio.sleep(0)

    peer = Peer()
    await Responder(peer.receive, peer.send, watch_usage=True, settle=settle).run(
        app, http_scope())
    assert seen_after_last_send == [1]
    assert settle.seen == [(COMPLETE, 200, Usage(**USAGE))]


async def test_settles_once_for_a_pathsend_response(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"0123")
    settle = Settlements()
    peer = Peer()
    scope = http_scope(method="GET", extensions={"http.response.pathsend": {}})
    await Responder(peer.receive, peer.send, settle=settle).run(FileResponse(path), scope)
    assert peer.sent[-1] == {"type": "http.response.pathsend", "path": str(path)}
    assert settle.seen == [(COMPLETE, 200, None)]


def test_settles_once_when_a_real_client_leaves_mid_stream(served: Served) -> None:
    produced: list[int] = []

    async def events() -> AsyncIterator[bytes]:
        for i in range(500):
            produced.append(i)
            yield b"data: %d\n\n" % i
            await anyio.sleep(0.01)

    served.app = guarded = Guarded(sse_app(events))
    with httpx.Client(timeout=10) as client, client.stream("GET", f"{served.base}/sse") as r:
        assert next(r.iter_lines()) == "data: 0"
    eventually(lambda: guarded.finished == 1)
    assert guarded.settlements.seen == [(DISCONNECT, 200, None)]
    assert len(produced) < 500


async def test_settles_once_when_receive_reports_a_disconnect() -> None:
    produced: list[int] = []

    async def events() -> AsyncIterator[bytes]:
        for i in range(500):
            produced.append(i)
            yield b"data: %d\n\n" % i
            await anyio.sleep(0.005)

    settle = Settlements()
    peer = Peer(b"{}", disconnect_after=0.03)
    responder = Responder(peer.receive, peer.send, watch_usage=True, settle=settle)
    assert await responder.read_body(LIMIT) == b"{}"  # the app then sees the replay, then ours
    await responder.run(sse_app(events), http_scope("/sse", method="GET"))
    assert settle.seen == [(DISCONNECT, 200, None)]
    assert 0 < len(produced) < 500


async def test_a_last_body_sent_after_the_client_left_is_not_complete() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.disconnect"
        await raw_app(b"late")(scope, receive, send)

    settle = Settlements()
    peer = Peer(disconnect_after=0)
    peer.incoming.clear()
    await Responder(peer.receive, peer.send, settle=settle).run(app, http_scope())
    assert settle.seen == [(DISCONNECT, 200, None)]


@pytest.mark.parametrize("app", [
    sse_app(lambda: _endless()),  # Starlette turns the OSError into ClientDisconnect
    raw_app(b"data: 1\n\n", b"data: 2\n\n"),  # the OSError itself propagates
], ids=["starlette", "raw"])
async def test_settles_once_when_send_raises_oserror(app: ASGIApp) -> None:
    settle = Settlements()
    peer = Peer(fail_send_at=2)
    responder = Responder(peer.receive, peer.send, settle=settle)
    with pytest.raises((OSError, ClientDisconnect)):
        await responder.run(app, http_scope("/sse", method="GET", spec_version="2.4"))
    assert settle.seen == [(DISCONNECT, 200, None)]


async def _endless() -> AsyncIterator[bytes]:
    while True:
        yield b"data: more\n\n"
        await anyio.sleep(0)


@pytest.mark.parametrize("started", [False, True])
async def test_settles_once_when_the_app_raises_and_the_error_propagates(started: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise LookupError("upstream broke")

    settle = Settlements()
    peer = Peer()
    with pytest.raises(LookupError, match="upstream broke"):
        await Responder(peer.receive, peer.send, settle=settle).run(app, http_scope())
    assert settle.seen == [(ERROR, 200 if started else None, None)]


async def test_an_app_returning_before_its_last_body_is_an_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    settle = Settlements()
    peer = Peer()
    await Responder(peer.receive, peer.send, settle=settle).run(app, http_scope())
    assert settle.seen == [(ERROR, 200, None)]


async def test_a_cancelled_run_still_settles_once_even_if_settle_awaits() -> None:
    started = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        started.set()
        await anyio.sleep_forever()

    settle = Settlements(wait=0.02)  # unshielded, this await would be cancelled too
    peer = Peer()
    responder = Responder(peer.receive, peer.send, settle=settle)
    async def serve() -> None:
        # a task's own coroutine is interpreted, as under a server: anyio inspects a task's
        # root coroutine (cr_frame), which a compiled one (setup.py) does not have
        await responder.run(app, http_scope())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await started.wait()
            tg.cancel_scope.cancel()
    assert settle.seen == [(CANCELLED, 200, None)]


async def test_a_hanging_settle_is_abandoned_after_its_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    async def hang(responder: Responder) -> None:
        await anyio.sleep_forever()

    await _settle_does_not_spoil_the_response(hang, caplog, "settle gave up after 0.05 s")


async def test_a_raising_settle_is_logged_not_propagated(caplog: pytest.LogCaptureFixture) -> None:
    await _settle_does_not_spoil_the_response(Settlements(fail=True), caplog, "settle failed")
    assert "store down" in caplog.text


async def _settle_does_not_spoil_the_response(settle: Settle, caplog: pytest.LogCaptureFixture,
                                              logged: str) -> None:
    peer = Peer()
    responder = Responder(peer.receive, peer.send, settle=settle, settle_timeout=0.05)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="gatekeeper"), anyio.fail_after(5):
        await responder.run(raw_app(SSE), http_scope())
    assert time.monotonic() - started < 1
    assert peer.body == SSE
    assert responder.outcome == COMPLETE
    assert [r.name for r in caplog.records if logged in r.getMessage()] == ["gatekeeper"]

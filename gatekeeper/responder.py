"""``Responder``: the state of one response, for the requests where a rule needs it.

It reads the request body once within a limit and replays it to the app, adds headers to the
response, reads the upstream's OpenAI ``usage`` as the body streams past (never holding back a
byte), and calls ``settle`` exactly once when the exchange ends, however it ends. Shaped like
Starlette's ``middleware/gzip.py`` responders: one small object per request wrapping
``receive``/``send``; requests that need none of it never build one.

Choices a caller relies on:

* Header precedence: for every name in ``headers``, ours win; an app header of the same name is
  dropped, so a client never sees two answers. Names must be lowercase bytes, as in ASGI.
* ``read_body`` returns ``None`` when the body is over the limit (answer 413, through
  ``responder.send`` so settle still runs, and do not run the app), and raises
  ``ClientDisconnected`` when the client leaves while sending it (outcome ``disconnect``,
  settled; nothing to answer).
* ``usage`` is the last well-formed ``usage`` object seen in an ``application/json`` body (up to
  ``USAGE_BUFFER_LIMIT``) or in the ``data:`` events of a ``text/event-stream`` (each event up to
  the same bound). Compressed bodies, other content types, malformed counts and overflowing
  buffers leave it ``None``: the caller decides what unknown usage costs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

import anyio

from gatekeeper.errors import GatekeeperError
from gatekeeper.types import ASGIApp, Message, Receive, Scope, Send
from gatekeeper.usage import Usage, read_usage

log = logging.getLogger("gatekeeper")

PENDING: Final = "pending"
COMPLETE: Final = "complete"
DISCONNECT: Final = "disconnect"
ERROR: Final = "error"
CANCELLED: Final = "cancelled"

USAGE_BUFFER_LIMIT: Final = 1 << 20
"""The most of a JSON body, or of one SSE event, kept to look for ``usage``."""

LOWERED_NAMES: Final = 256
_LOWERED: Final[dict[bytes, bytes]] = {}
"""Header name as an app sends it -> in lowercase, for the first ``LOWERED_NAMES`` names (the
app's, never a client's): apps send the same few in every response, and ``bytes.lower`` is
a method call that makes a new object, whose hash the look-up in ``names`` then computes."""

_OFF: Final = 0
_JSON: Final = 1
_SSE: Final = 2


class ClientDisconnected(GatekeeperError):
    """The client went away while its request body was being read."""

    def __init__(self, received: int) -> None:
        self.received = received
        super().__init__(f"client disconnected after {received} bytes of request body")


Names = frozenset[bytes]
"""The names of the headers a response gets from gatekeeper (lowercase)."""
Settle = Callable[["Responder"], Awaitable[None] | None]
"""Called exactly once when the exchange ends; reads ``outcome``, ``status`` and ``usage``.
A settle that finished its work at once (an in-process store) returns None; one that has I/O
to do returns an awaitable, which is awaited shielded and bounded by ``settle_timeout``."""


class Responder:
    """State of one response: body replay, added headers, usage seen, settle once."""

    # State starts at these class defaults; an instance writes only what changes (fewer
    # stores per request than slots set in __init__: this object is made per request).
    _replay: Message | None = None
    _disconnected = False
    _watch = _OFF
    _buffer: bytearray | None = None
    """The JSON body so far, or the SSE line not yet ended (made when first needed)."""
    _event: bytearray | None = None
    """The data of the SSE event not yet dispatched."""
    usage: Usage | None = None
    outcome = PENDING
    status: int | None = None
    _names: Names | None = None

    def __init__(self, receive: Receive, send: Send, *,
                 headers: Sequence[tuple[bytes, bytes]] = (), watch_usage: bool = False,
                 settle: Settle | None = None, settle_timeout: float = 2.0,
                 names: Names | None = None) -> None:
        """``names``: every name in ``headers`` (a caller that compiled them says so, and
        the response start then builds no set of its own)."""
        self._receive = receive
        self._send = send
        self._headers = headers
        self._watch_usage = watch_usage
        self._settle = settle
        self._settle_timeout = settle_timeout
        self._names = names

    def arm(self, headers: Sequence[tuple[bytes, bytes]], settle: Settle | None,
            names: Names | None = None) -> None:
        """What only later stages knew when the body was read first: headers and settle."""
        self._headers = headers
        self._settle = settle
        self._names = names

    def replay_instead(self, body: bytes) -> None:
        """Give the app ``body`` in place of the one read (call after ``read_body``)."""
        self._replay = {"type": "http.request", "body": body, "more_body": False}

    async def read_body(self, limit: int, first: Message | None = None) -> bytes | None:
        """The whole request body, or ``None`` as soon as it would pass ``limit`` bytes (nothing
        past the limit is kept). Call once, before ``run``; the app is then given the same bytes.
        ``first``: the first message, when the caller received it (``whole_body`` said no).
        """
        message = await self._receive() if first is None else first
        if is_whole(message):
            return self.whole_body(message, limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] != "http.request":
                self._disconnected = True
                await self._finish(DISCONNECT)
                raise ClientDisconnected(size)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await self._receive()
        body = b"".join(chunks)
        self._replay = {"type": "http.request", "body": body, "more_body": False}
        return body

    def whole_body(self, message: Message, limit: int) -> bytes | None:
        """``read_body`` of a first message that holds all of the body (``is_whole``), with no
        coroutine: the usual case."""
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            return None
        self._replay = message  # given to the app as it came
        return body

    async def receive(self) -> Message:
        replay = self._replay
        if replay is not None:
            self._replay = None
            return replay
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._disconnected = True
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            # Read before forwarding: a middleware outside us may rewrite the message (gzip does).
            body, more = message.get("body", b""), message.get("more_body", False)
            try:
                await self._send(message)
            except OSError:  # the server's way to say the client is gone (uvicorn's)
                self._disconnected = True
                raise
            watch = self._watch
            if watch == _JSON and not more and self._buffer is None:
                # the whole JSON body in one message (the common case): read it where it is
                self._watch = _OFF
                if len(body) <= USAGE_BUFFER_LIMIT:
                    self._read_usage(body)
            elif watch != _OFF:
                self._observe(body if type(body) is bytes else bytes(body), more)
            if not more:
                pending = self._settled(DISCONNECT if self._disconnected else COMPLETE)
                if pending is not None:
                    await self._wait(pending)
            return
        if kind == "http.response.start":
            message = self._start(message)
        try:
            await self._send(message)
        except OSError:
            self._disconnected = True
            raise
        if kind == "http.response.pathsend":
            await self._finish(DISCONNECT if self._disconnected else COMPLETE)

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        """Run the app through this responder; settle once however it ends, then re-raise."""
        # No await inside an except or finally: compiled (mypyc), a bare raise after one
        # re-raised whatever exception that await had handled, not the request's own.
        error: BaseException | None = None
        try:
            await app(scope, self.receive, self.send)
        except BaseException as exc:
            error = exc
        if error is not None or self.outcome == PENDING:
            await self.ended(error)

    async def ended(self, error: BaseException | None) -> None:
        """``run``'s end, for a caller that awaited the app itself (one coroutine fewer per
        request): call it when the app raised ``error`` or returned before its last body;
        settles once, then re-raises ``error``."""
        if self.outcome == PENDING:
            # Raising or returning before the last body: the client left, or the app failed.
            await self._finish(
                CANCELLED if error is not None and
                isinstance(error, anyio.get_cancelled_exc_class()) else
                DISCONNECT if self._disconnected else ERROR)
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no frame -> traceback -> frame cycle left behind

    def _start(self, message: Message) -> Message:
        """One pass over the app's headers: ours replace any of the same name, and the
        content type and encoding say whether the body can be read for usage."""
        self.status = message["status"]
        ours = self._headers
        if not ours and not self._watch_usage:
            return message
        names = self._names
        if names is None:
            names = header_names(ours)
        kept: list[Any] = []
        media = b""
        plain = True
        lowered = _LOWERED
        for header in message.get("headers") or ():
            name = header[0]
            if type(name) is bytes:
                low = lowered.get(name)
                if low is None:
                    low = name.lower()
                    if len(lowered) < LOWERED_NAMES:
                        lowered[name] = low
                name = low
            else:
                name = bytes(name).lower()
            if name in names:
                continue
            if name == b"content-type":
                media = header[1]
                if media != b"application/json":  # else as an app writes it, nothing to do
                    media = bytes(media).partition(b";")[0].strip().lower()
            elif name == b"content-encoding" and bytes(header[1]).strip().lower() != b"identity":
                plain = False
            kept.append(header)
        if self._watch_usage and plain:
            self._watch = _JSON if media == b"application/json" else \
                _SSE if media == b"text/event-stream" else _OFF
        if not ours:
            return message  # nothing to add: forwarded as it came
        kept += ours
        return {**message, "headers": kept}

    def _observe(self, body: bytes, more: bool) -> None:
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = bytearray()
        buffer += body
        if self._watch == _SSE and body.find(b"\n") >= 0:
            self._read_lines()
            buffer = self._buffer
            if buffer is None:  # [DONE], or an event over the bound: no longer watching
                return
        if len(buffer) > USAGE_BUFFER_LIMIT:
            self._stop_watching()
        elif not more and self._watch == _JSON:
            self._read_usage(buffer)

    def _read_lines(self) -> None:
        assert self._buffer is not None
        lines = self._buffer.split(b"\n")
        self._buffer = lines.pop()
        event = self._event
        if event is None:
            event = self._event = bytearray()
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._dispatch(event)
            elif line.startswith(b"data:"):
                if event:
                    event += b"\n"
                event += line[6:] if line.startswith(b"data: ") else line[5:]
                if len(event) > USAGE_BUFFER_LIMIT:
                    self._stop_watching()
            if self._watch == _OFF:
                return

    def _dispatch(self, data: bytearray) -> None:
        if data == b"[DONE]":
            self._stop_watching()
        else:
            self._read_usage(data)
        data.clear()

    def _read_usage(self, raw: bytes | bytearray) -> None:
        usage = read_usage(raw)
        if usage is not None:
            self.usage = usage

    def _stop_watching(self) -> None:
        self._watch = _OFF
        self._buffer = None
        self._event = None

    async def _finish(self, outcome: str) -> None:
        pending = self._settled(outcome)
        if pending is not None:
            await self._wait(pending)

    def _settled(self, outcome: str) -> Awaitable[None] | None:
        """Settle once: what is left to await (a store with I/O), else None (done at once,
        as a memory-store settle is: no coroutine, no scope to enter)."""
        if self.outcome != PENDING:
            return None
        self.outcome = outcome
        if self._watch != _OFF:
            self._stop_watching()
        settle = self._settle
        if settle is None:
            return None
        try:
            return settle(self)
        except Exception:
            log.exception("settle failed (outcome %s); the response stands", outcome)
            return None

    async def _wait(self, pending: Awaitable[None]) -> None:
        # Shielded so a cancelled request still settles; bounded so a stuck store cannot hold it.
        with anyio.move_on_after(self._settle_timeout, shield=True) as bound:
            try:
                await pending
            except Exception:
                log.exception("settle failed (outcome %s); the response stands", self.outcome)
        if bound.cancelled_caught:
            log.error("settle gave up after %.3g s (outcome %s)", self._settle_timeout,
                      self.outcome)


def is_whole(message: Message) -> bool:
    """A request message holding all of the body (the usual case)."""
    return message["type"] == "http.request" and not message.get("more_body", False)


def header_names(headers: Sequence[tuple[bytes, bytes]]) -> Names:
    """The names of ``headers``, for a caller that did not compile them."""
    return frozenset([name for name, _ in headers])


def with_headers(message: Message, headers: Iterable[Any],
                 ours: Sequence[tuple[bytes, bytes]], names: Names | None = None) -> Message:
    """``message`` (an ``http.response.start``) with ``ours`` added; an app header of the same
    name is dropped, so a client never sees two answers. ``names``: every name in ``ours``,
    when the caller has them."""
    if names is None:
        names = header_names(ours)
    kept = [h for h in headers
            if (h[0] if type(h[0]) is bytes else bytes(h[0])).lower() not in names]
    kept += ours
    return {**message, "headers": kept}


class HeaderSend:
    """The cheapest wrap, for a response that only gets headers (rate limits): no body
    replay, no usage, no settle, so no Responder."""

    __slots__ = ("_headers", "_names", "_send")

    def __init__(self, send: Send, headers: Sequence[tuple[bytes, bytes]],
                 names: Names | None = None) -> None:
        self._send = send
        self._headers = headers
        self._names = names

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message = with_headers(message, message.get("headers") or (), self._headers,
                                   self._names)
        await self._send(message)

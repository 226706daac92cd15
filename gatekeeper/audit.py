"""One JSON line per refusal, on the ``gatekeeper.audit`` logger: what security teams read.

Lines carry the key id, never the key; the method and path are cut to 16 and 256 characters;
values the client controls are JSON-escaped, so a hostile header cannot forge a second line.
Refusals come in floods when stolen keys are tried, so a line is assembled by hand (each string
escaped by the json module's own encoder) and the timestamp's seconds part is reused within a
second: about half the cost of ``json.dumps`` on a dict.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote
from logging.handlers import QueueHandler, QueueListener
from queue import SimpleQueue

from gatekeeper.audit_stream import RedisAuditStream
from gatekeeper.decision import Decision
from gatekeeper.facts import RequestFacts
from gatekeeper.types import Scope

AUDIT_LOGGER = "gatekeeper.audit"
_METHOD = 16
_PATH = 256
"""Client text is cut to these lengths: a line stays one line of bounded size."""


def _q(value: str | None) -> str:
    return "null" if value is None else _quote(value)


class AuditLog:
    """Audit lines on a logger. ``start``/``stop`` (the middleware's lifespan) move the audit
    logger's own handlers behind a queue: a slow handler (a file on a busy disk, a remote
    syslog) then runs in a thread and never holds the event loop during a refusal flood."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(AUDIT_LOGGER)
        self._second = -1
        self._second_text = ""
        self._listener: QueueListener | None = None
        self._handlers: list[logging.Handler] = []
        self.stream: RedisAuditStream | None = None
        """A copy of every line into a Redis stream (``audit.redis_stream``), when set."""

    def start(self) -> None:
        """Queue the logger's own handlers (those on ``gatekeeper.audit`` itself; handlers of
        ancestors it propagates to stay as they are) and start the stream's writer. Idempotent."""
        if self.stream is not None:
            self.stream.start()
        if self._listener is not None or not self.logger.handlers:
            return
        self._handlers = list(self.logger.handlers)
        lines: SimpleQueue[logging.LogRecord] = SimpleQueue()
        self._listener = QueueListener(lines, *self._handlers, respect_handler_level=True)
        for handler in self._handlers:
            self.logger.removeHandler(handler)
        self.logger.addHandler(QueueHandler(lines))
        self._listener.start()

    def stop(self) -> None:
        """Write what is queued, then give the handlers back."""
        if self._listener is None:
            return
        self._listener.stop()
        for handler in list(self.logger.handlers):
            if isinstance(handler, QueueHandler):
                self.logger.removeHandler(handler)
        for handler in self._handlers:
            self.logger.addHandler(handler)
        self._listener, self._handlers = None, []

    async def close_stream(self) -> None:
        """Write what the stream has buffered and close it."""
        if self.stream is not None:
            await self.stream.stop()

    def refused(self, decision: Decision, facts: RequestFacts | None, now: float,
                scope: Scope | None = None) -> None:
        """``scope`` names the request when it was refused before its facts were read."""
        if self.logger.isEnabledFor(logging.INFO) or self.stream is not None:
            self._write("refused", self._line("refused", decision, facts, now, scope))

    def flagged(self, decision: Decision, facts: RequestFacts | None, now: float,
                scope: Scope | None = None) -> None:
        """An allowed request marked by a signal (``action: flag``): once per decision record,
        not on every request it serves."""
        if self.logger.isEnabledFor(logging.INFO) or self.stream is not None:
            self._write("flagged", self._line("flagged", decision, facts, now, scope))

    def key_changed(self, event: str, tenant: str, key_id: str, now: float,
                    detail: str = "") -> None:
        """A key suspended, revoked or reported leaked (``key.suspended``...)."""
        self._write(event, f'{{"ts":"{self._timestamp(now)}","event":{_q(event)},'
                           f'"key_id":{_q(key_id)},"tenant":{_q(tenant)},'
                           f'"detail":{_q(detail)}}}')

    def _write(self, event: str, line: str) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(line)
        if self.stream is not None:
            self.stream.add(event, line)

    def resale(self, decision: Decision, would: str, score: float, reasons: list[str],
               now: float, scope: Scope | None = None) -> None:
        """What the resale score asks for a key changed (``would``: flag, throttle, block,
        suspend), with the score and its top reasons; the same line in shadow and enforce.
        ``reason`` is the request's own decision before the score."""
        if self.logger.isEnabledFor(logging.INFO):
            line = self._line("resale", decision._replace(signals=()), None, now, scope)
            self.logger.info(f'{line[:-1]},"would":{_q(would)},"score":{score:.1f},'
                             f'"reasons":[{",".join(_q(r) for r in reasons)}]}}')

    def _line(self, event: str, decision: Decision, facts: RequestFacts | None, now: float,
              scope: Scope | None) -> str:
        reason = decision.reason
        if facts is not None:
            client = facts.client.text if facts.client is not None else None
            header = facts.credential.header if facts.credential else facts.credential_header
            request = (f',"client_ip":{_q(client)},"method":{_q(facts.method[:_METHOD])}'
                       f',"path":{_q(facts.path[:_PATH])},"credential_header":'
                       f'{_q(header)}')
        elif scope is not None:
            peer = scope.get("client")
            client = str(peer[0])[:64] if isinstance(peer, (tuple, list)) and peer else None
            request = (f',"client_ip":{_q(client)},"method":'
                       f'{_q(str(scope.get("method", ""))[:_METHOD])}'
                       f',"path":{_q(str(scope.get("path", ""))[:_PATH])}')
        else:
            request = ""
        signals = "" if not decision.signals else \
            ',"signals":[' + ",".join(_q(s) for s in decision.signals) + "]"
        return (f'{{"ts":"{self._timestamp(now)}","event":"{event}","reason":"{reason.code}",'
                f'"status":{reason.status},"key_id":{_q(decision.key_id)},'
                f'"tenant":{_q(decision.tenant)}{request},"detail":{_q(decision.detail)}'
                f'{signals}}}')

    def _timestamp(self, now: float) -> str:
        """``datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")``, faster."""
        second = int(now)
        micros = round((now - second) * 1e6)  # rounded to microseconds first, as datetime does
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{micros // 1000:03d}+00:00"

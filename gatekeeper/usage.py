"""What a response says it used: the ``usage`` of an OpenAI-compatible JSON body or stream
event, read where it is (compiled, in place: no decoder for the usual shapes), else parsed.
The Responder reads it as the response passes; replay reads it from its records."""

from __future__ import annotations

import json
import re
from typing import Final, NamedTuple

MAX_TOKENS: Final = 1_000_000_000
"""Larger token counts are not believed: far above any context window."""


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def parse_usage(document: object) -> Usage | None:
    """The ``usage`` of an OpenAI response or stream chunk, or ``None`` unless all three counts
    are ints in ``0..MAX_TOKENS``."""
    if not isinstance(document, dict):
        return None
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    counts: list[int] = []
    for name in Usage._fields:
        count = usage.get(name)
        if type(count) is not int or not 0 <= count <= MAX_TOKENS:
            return None
        counts.append(count)
    return Usage._make(counts)


_DECODER = json.JSONDecoder()
_USUAL = re.compile(rb'"usage"\s*:\s*\{\s*"prompt_tokens"\s*:\s*(\d{1,10})\s*,\s*'
                    rb'"completion_tokens"\s*:\s*(\d{1,10})\s*,\s*"total_tokens"\s*:\s*'
                    rb'(\d{1,10})\s*[,}]')
_new: Final = tuple.__new__


def read_usage(raw: bytes | bytearray) -> Usage | None:
    """The usage a JSON response or one stream event reports, or None."""
    at = raw.rfind(b'"usage"')
    if at < 0:
        return None
    usage = _usage_at(raw, at)
    if usage is None:  # not where it looked: read the whole document
        try:
            usage = parse_usage(json.loads(raw))
        except (ValueError, RecursionError):  # not JSON, bad UTF-8, too deep, too long
            return None
    return usage


def _usage_at(raw: bytes | bytearray, at: int) -> Usage | None:
    """The ``usage`` object whose key starts at ``at``, decoded alone: a response is mostly
    its content, and parsing all of it costs more than the rest of the limits together. The
    key cannot sit inside a string (a quote there is escaped), so the last ``"usage"`` is the
    top-level one in OpenAI's shapes; anything else answers None and the caller parses it all.
    """
    data = raw if type(raw) is bytes else bytes(raw)
    # OpenAI's order without spaces (a compact encoder, streamed chunks): read in place
    if _has(data, at, b'"usage":{"prompt_tokens":'):
        prompt, i = _count(data, at + 25)
        if i > 0 and _has(data, i, b',"completion_tokens":'):
            completion, i = _count(data, i + 21)
            if i > 0 and _has(data, i, b',"total_tokens":'):
                total, i = _count(data, i + 16)
                if 0 < i < len(data) and (data[i] == 44 or data[i] == 125):  # , or }
                    return _new(Usage, (prompt, completion, total))
    found = _USUAL.match(data, at)
    if found is not None:  # the same order, with spaces: no decoder needed
        prompt, completion, total = (int(g) for g in found.groups())
        if prompt <= MAX_TOKENS and completion <= MAX_TOKENS and total <= MAX_TOKENS:
            return _new(Usage, (prompt, completion, total))
        return None
    tail = raw[at + 7:at + 7 + 4096].lstrip()
    if tail[:1] != b":":
        return None
    try:
        text = bytes(tail[1:]).decode("utf-8", "ignore").lstrip()
        document, _ = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    return parse_usage({"usage": document})


def _count(data: bytes, i: int) -> tuple[int, int]:
    """The token count written at ``i`` and the index after it; ``(0, -1)`` for anything but
    1 to 10 digits, or a count over ``MAX_TOKENS``."""
    start = i
    end = i + 11
    if end > len(data):
        end = len(data)
    value = 0
    while i < end:
        c = data[i]
        if c < 48 or c > 57:
            break
        value = value * 10 + c - 48
        i += 1
    if i == start or i - start > 10 or value > MAX_TOKENS:
        return 0, -1
    return value, i


def _has(data: bytes, i: int, text: bytes) -> bool:
    """``data.startswith(text, i)`` as a slice compared: compiled, both are primitives, where
    a method call goes through Python."""
    return data[i:i + len(text)] == text

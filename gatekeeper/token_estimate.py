"""The token estimate a token limit reserves before the upstream answers; the upstream's
``usage`` settles it afterwards.

Prompt: ``ceil(chars / 4)`` over the text of ``messages`` (string content, text parts,
tool-call arguments, plus 4 per message), ``input`` and ``prompt`` (strings; token arrays
count their length), and ``instructions``. That is close for English
(OpenAI's rule of thumb is 4 characters a token) and low for CJK text, code and images (image
and audio parts count nothing; tool schemas are not counted). Completion: ``max_tokens`` (else
the policy's ``default_max_tokens``) times ``n``, for endpoints that complete (not embeddings
or moderations). The walk looks at ``MAX_WALK`` items at most; past that the prompt is
estimated as the body's size / 4, which is high.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gatekeeper.policy.limits import MAX_COUNT

CHARS_PER_TOKEN: Final = 4
MESSAGE_TOKENS: Final = 4
"""Role and separators of one chat message (OpenAI's counting guide says 3 to 4)."""
MAX_WALK: Final = 10_000
"""Messages, parts and inputs looked at for the estimate: bounds the work on a crafted body."""
MAX_ESTIMATE: Final = MAX_COUNT
NO_COMPLETION: Final = ("embeddings", "moderations")
"""Last path segments of endpoints that generate no tokens."""


def path_completes(path: str) -> bool:
    """Whether the endpoint at ``path`` generates tokens (``/v1/embeddings`` does not)."""
    return path.rstrip("/").rpartition("/")[2] not in NO_COMPLETION


def completion_tokens(max_tokens: int | None, default: int, choices: int) -> int:
    """``max_tokens`` (else the policy's default) for each of ``choices``, capped. Without
    ``min``/``max``: compiled, each is a call into Python, on every request."""
    each = default if max_tokens is None else max_tokens
    total = each * choices if each > 0 else 0
    return total if total < MAX_ESTIMATE else MAX_ESTIMATE


def prompt_tokens(document: dict[str, Any], size: int) -> int:
    """The prompt estimate of a parsed body of ``size`` bytes (see the module docstring).
    A ``dict``, as parsed (compiled, its look-ups are then direct, not generic mapping calls).
    """
    messages = document.get("messages")
    if type(messages) is list and len(messages) <= MAX_WALK and "input" not in document \
            and "prompt" not in document and "instructions" not in document:
        # the usual chat body, messages of plain text: the walk below, without its calls
        chars = 0
        for item in messages:
            if type(item) is not dict:
                break
            content = item.get("content")
            if type(content) is not str or "tool_calls" in item or "arguments" in item \
                    or "output" in item:
                break
            chars += len(content)
        else:
            return MESSAGE_TOKENS * len(messages) + -(-chars // CHARS_PER_TOKEN)
    count = _Count()
    try:
        count.messages(document.get("messages"))
        count.inputs(document.get("input"))
        count.inputs(document.get("prompt"))
        count.text(document.get("instructions"))
    except _Capped:
        return -(-size // CHARS_PER_TOKEN)
    return count.tokens + -(-count.chars // CHARS_PER_TOKEN)


class _Count:
    """Characters and counted tokens over a fixed-depth walk of at most ``MAX_WALK`` items."""

    __slots__ = ("chars", "left", "tokens")

    def __init__(self) -> None:
        self.chars = 0
        self.tokens = 0
        self.left = MAX_WALK

    def step(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _Capped

    def text(self, value: object) -> None:
        if isinstance(value, str):
            self.chars += len(value)

    def inputs(self, value: object) -> None:
        """A string, a token array, or a list of strings, token arrays or message items."""
        if isinstance(value, str):
            self.chars += len(value)
        elif isinstance(value, list) and value:
            if _is_token(value[0]):
                self.tokens += len(value)
                return
            for item in value:
                self.step()
                if isinstance(item, str):
                    self.chars += len(item)
                elif isinstance(item, list) and item and _is_token(item[0]):
                    self.tokens += len(item)
                elif isinstance(item, dict):
                    self.message(item)

    def messages(self, value: object) -> None:
        if isinstance(value, list):
            for item in value:
                self.step()
                if isinstance(item, dict):
                    self.message(item)

    def message(self, item: Mapping[str, Any]) -> None:
        """A chat message or a Responses input item (message, function call or its output)."""
        self.tokens += MESSAGE_TOKENS
        content = item.get("content")
        if isinstance(content, str):
            self.chars += len(content)
        elif isinstance(content, list):
            for part in content:
                self.step()
                if isinstance(part, dict):
                    self.text(part.get("text"))
                elif isinstance(part, str):
                    self.chars += len(part)
        calls = item.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                self.step()
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    self.text(function.get("arguments"))
        self.text(item.get("arguments"))
        self.text(item.get("output"))


class _Capped(Exception):
    pass


def _is_token(value: object) -> bool:
    return type(value) is int

"""What a request body says, checked against the tenant's request policy: pure, no ASGI.

``read_request`` answers a ``Refusal`` or the ``BodyFacts`` the rest of the request needs:
model, max_tokens, n, stream, include_usage, the end-user id and a token estimate. It parses
JSON only when a rule or the estimate needs it, and holds the parse to what upstreams agree
on: strict UTF-8, no NaN or Infinity, no repeated keys (parsers disagree on which copy wins,
so a repeated ``model`` could pass the check as one model and run as another), and a field a
rule reads must have the type it checks (``"max_tokens": "99999"`` is refused under a ceiling,
since lax validators such as pydantic's would read it as a number).

The token estimate is ``token_estimate.py``'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from gatekeeper.policy.request_policy import RequestPolicy
from gatekeeper.reasons import (
    BODY_INVALID,
    BODY_NOT_JSON,
    BODY_TOO_LARGE,
    FIELD_NOT_ALLOWED,
    MAX_TOKENS_TOO_LARGE,
    MODEL_NOT_ALLOWED,
    N_TOO_LARGE,
    Refusal,
)
from gatekeeper.token_estimate import (
    CHARS_PER_TOKEN,
    MAX_ESTIMATE,
    completion_tokens,
    prompt_tokens,
)

MAX_TOKEN_FIELDS: Final[tuple[str, ...]] = ("max_tokens", "max_completion_tokens",
                                            "max_output_tokens")
CHOICE_FIELDS: Final[tuple[str, ...]] = ("n", "best_of")
"""Tuples of any length to the compiler: one of fixed length is a C struct, boxed into a new
tuple at every call that passes it on (``_largest``, twice per checked body)."""
_SHOWN: Final = 64
_USAGE_OPTION = b'"stream_options":{"include_usage":true},'


class BodyFacts(NamedTuple):
    """A NamedTuple: built once per checked request, and a frozen dataclass costs twice as much.
    """

    model: str | None = None
    max_tokens: int | None = None
    """The largest of ``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``."""
    n: int = 1
    """Choices generated: the larger of ``n`` and ``best_of``, at least 1."""
    stream: bool = False
    include_usage: bool = False
    """The client asked for usage in its stream (``stream_options.include_usage``)."""
    user: str | None = None
    """The end-user id the client sent (``user``, else ``safety_identifier``)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    document: dict[str, Any] | None = None
    """The parsed body, for ``with_include_usage``; ``None`` when it was not parsed."""

    @property
    def tokens(self) -> int:
        """The estimate a token limit reserves."""
        return self.prompt_tokens + self.completion_tokens


NO_BODY = BodyFacts()
BODY_FACTS: Final = "gatekeeper.body"
"""Where ``admit_request`` leaves a read body's ``BodyFacts`` in the scope for the resale
stage, which takes it out before the app runs (with every score off it stays there, unused)."""


def is_json_type(content_type: str | None) -> bool:
    """JSON by its media type; no content type counts as JSON, as FastAPI reads it."""
    if not content_type or content_type == "application/json":  # as clients send it
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


def read_request(body: bytes, content_type: str | None, rules: RequestPolicy, *,
                 parse: bool, completes: bool = True) -> BodyFacts | Refusal:
    """Check ``body`` against ``rules``; ``parse`` asks for the token estimate too.

    A body that no rule reads and no estimate needs is not parsed. A non-JSON body (an upload)
    passes when only the estimate is wanted (its prompt counts 0; a JSON object sent under
    another type is estimated as JSON), and is refused when a rule must read it: a rule that
    cannot be checked must not be skipped."""
    if len(body) > rules.max_body_bytes:
        return Refusal(BODY_TOO_LARGE, detail=f"{len(body)} bytes")
    if not body or not (parse or rules.needs_json):
        return NO_BODY
    json_type = is_json_type(content_type)
    if not json_type and not rules.needs_json:
        # JSON under another type is still estimated: an upstream may parse it anyway
        document = parse_json_object(body)[0] if body[:64].lstrip()[:1] == b"{" else None
        if document is None:
            return BodyFacts(completion_tokens=rules.default_max_tokens if completes else 0)
        return _check(document, rules, len(body), completes)
    document, problem = parse_json_object(body)
    if document is None:
        if json_type:
            return Refusal(BODY_INVALID, detail=problem)
        return Refusal(BODY_NOT_JSON, detail=f"content-type {_show(content_type)}: {problem}")
    return _check(document, rules, len(body) if parse else 0, completes)


QUICK_LIMIT: Final = 4096
"""Bodies up to this size may be estimated without parsing (``quick_read``)."""
_DECLARED: Final = re.compile(
    rb'"(' + b"|".join(name.encode() for name in (*MAX_TOKEN_FIELDS, *CHOICE_FIELDS)) +
    rb')"\s*:\s*(\d{1,12})\b')
_CHOICES: Final = frozenset(name.encode() for name in CHOICE_FIELDS)
_STREAMS: Final = re.compile(rb'"stream"\s*:\s*true\b')
_new: Final = tuple.__new__


def quick_read(body: bytes, default_max_tokens: int, completes: bool) -> BodyFacts | None:
    """The estimate of a small body without parsing it, or None when it must be parsed.

    For a token limit alone (no rule reads the body, no spend to price): the prompt is the
    body's size / 4, which counts keys and punctuation too (high, like the parsed estimate past
    its walk); the completion takes the LARGEST max-tokens and ``n`` values written anywhere in
    the body. An unescaped ``"max_tokens":`` can only be a key (a quote inside a string is
    escaped), so a nested copy can only raise the estimate; a ``\\u`` escape could spell a key
    unseen, so such a body is parsed. The upstream's usage settles the reservation either way.
    """
    # find(), not ``in``: bytes.__contains__ first tries its argument as an int, and the
    # TypeError it raises and clears costs more than the search
    if len(body) > QUICK_LIMIT or body.find(b"\\u") >= 0:
        return None
    max_tokens: int | None = None
    n = 1
    # one findall: each C call costs about as much as a page of Python here
    for name, digits in _DECLARED.findall(body):
        value = int(digits)
        if name in _CHOICES:
            n = value if value > n else n
        elif max_tokens is None or value > max_tokens:
            max_tokens = value
    if completes:  # completion_tokens(), inlined
        completion = (default_max_tokens if max_tokens is None else max_tokens) * n
        completion = 0 if completion < 0 else MAX_ESTIMATE if completion > MAX_ESTIMATE \
            else completion
    else:
        completion = 0
    streams = body.find(b'"stream"') >= 0 and _STREAMS.search(body) is not None
    return _new(BodyFacts, (None, max_tokens, n, streams, False, None,
                            -(-len(body) // CHARS_PER_TOKEN), completion, None))


def parse_json_object(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """The body as a JSON object, or ``None`` and what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    if text.startswith("\ufeff"):
        text = text[1:]
    if text[:1] == "{" and text.find("\\") < 0:
        usual = _without_repeats(text)
        if usual is not None:
            return usual, ""
    try:
        if text[:1] == "{":  # the usual body: the decoder's scanner alone, no wrapper calls
            document, end = _SCAN(text, 0)
            if end != len(text) and text[end:].strip(_JSON_SPACE):
                return None, "not JSON"  # what the decoder calls extra data
        else:
            document = _DECODER.decode(text)
    except _Repeated as exc:
        return None, f"repeats the key {_show(exc.args[0])}"
    except (ValueError, RecursionError, StopIteration):  # not JSON, NaN, too deep, too long
        return None, "not JSON"
    if not isinstance(document, dict):
        return None, "not a JSON object"
    return document, ""


def with_include_usage(body: bytes, document: Mapping[str, Any] | None) -> bytes | None:
    """``body`` asking for usage in its stream, or ``None`` when there is nothing to change.

    Changes a streaming chat or completions request (``messages`` or ``prompt``) whose client
    did not set ``stream_options.include_usage``, so a token limit settles on real usage.
    Such a client then receives one extra last chunk, before ``[DONE]``, whose ``choices`` is
    empty and which carries ``usage`` (OpenAI's own shape when a client asks for it); a client
    that reads ``choices[0]`` of every chunk without checking must be told. The Responses API
    is left alone: its stream reports usage anyway. The rest of the body is kept byte for
    byte when the field is absent, else re-serialised to an equal document."""
    if document is None or document.get("stream") is not True:
        return None
    if "messages" not in document and "prompt" not in document:
        return None
    options = document.get("stream_options")
    if options is None and "stream_options" not in document:
        start = body.index(b"{") + 1  # a parsed object: only whitespace or a BOM comes before
        return body[:start] + _USAGE_OPTION + body[start:]
    if options is None:
        options = {}
    if not isinstance(options, dict) or options.get("include_usage") is not None:
        return None
    changed = {**document, "stream_options": {**options, "include_usage": True}}
    # ASCII escapes: a lone surrogate (a legal "\ud800" escape) has no UTF-8 encoding
    return json.dumps(changed, separators=(",", ":")).encode()


def _check(document: dict[str, Any], rules: RequestPolicy, size: int,
           completes: bool) -> BodyFacts | Refusal:
    for name in rules.forbidden_order:
        if document.get(name) is not None:
            return Refusal(FIELD_NOT_ALLOWED, detail=f"field {name}")
    model = document.get("model")
    if not isinstance(model, str):
        if model is not None and rules.models is not None:
            return Refusal(BODY_INVALID, detail="model is not a string")
        model = None
    elif not rules.model_allowed(model):
        return Refusal(MODEL_NOT_ALLOWED, detail=f"model {_show(model)}")
    try:
        max_tokens = _largest(document, MAX_TOKEN_FIELDS, rules.max_tokens)
        n = _largest(document, CHOICE_FIELDS, rules.max_n)
    except _Refused as refused:
        return refused.refusal
    choices = n if n is not None and n > 1 else 1
    completion = completion_tokens(max_tokens, rules.default_max_tokens, choices) \
        if completes else 0
    options = document.get("stream_options")
    user = document.get("user")
    if type(user) is not str:
        user = document.get("safety_identifier")
        if type(user) is not str:
            user = None
    prompt = prompt_tokens(document, size) if size else 0
    return _new(BodyFacts, (
        model, max_tokens, choices, document.get("stream") is True,
        type(options) is dict and options.get("include_usage") is True,
        user, prompt if prompt < MAX_ESTIMATE else MAX_ESTIMATE, completion, document))


def _largest(document: dict[str, Any], names: tuple[str, ...],
             ceiling: int | None) -> int | None:
    """The largest whole number among ``names``; a wrong type or a value over ``ceiling`` is
    a refusal when there is a ceiling (raised as ``_Refused``), and ignored (for the estimate)
    when there is none."""
    found: int | None = None
    for name in names:
        value = document.get(name)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if type(value) is not int:
            if ceiling is not None:
                raise _Refused(Refusal(BODY_INVALID, detail=f"{name} is not a whole number"))
            continue
        if ceiling is not None and value > ceiling:
            shown = value if value <= MAX_ESTIMATE else f"over {MAX_ESTIMATE}"
            over = MAX_TOKENS_TOO_LARGE if name in MAX_TOKEN_FIELDS else N_TOO_LARGE
            raise _Refused(Refusal(over, detail=f"{name} {shown} over {ceiling}"))
        found = value if found is None else max(found, value)
    return found


class _Refused(Exception):
    """``_largest``'s refusal, raised: its usual answer (a number or None) then needs no type
    check on every request, and neither the reason nor ``Refusal`` is looked up for it."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason.code)
        self.refusal = refusal


class _Repeated(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Repeated(name)
            seen.add(name)
    return document


def _without_repeats(text: str) -> dict[str, Any] | None:
    """The usual body (an object, no backslash, nested at most ``_SHALLOW`` deep) parsed
    without ``_unique``'s hook, or None when that cannot show it valid and free of repeated
    keys (``parse_json_object`` then parses it the careful way, which names what is wrong).

    Without a backslash every ``"`` delimits a string, so the text holds ``count('"') / 2``
    strings, each a key or a string value; a repeated key loses at least its own string from
    the parsed document, so the counts agree exactly when no key was repeated."""
    try:
        document, end = _PLAIN_SCAN(text, 0)
        if end != len(text) or type(document) is not dict or \
                2 * _strings_in(document, 0) != text.count('"'):
            return None
    except (ValueError, RecursionError, StopIteration, _Deep):
        return None
    return document


_SHALLOW: Final = 32
"""Deeper bodies take the careful way: near the recursion limit, its hook's extra call could
fail where the plain scanner does not."""


class _Deep(Exception):
    pass


def _strings_in(document: dict[str, Any], depth: int) -> int:
    """Keys and string values in a parsed object, nested ones included."""
    return len(document) + _strings_among(list(document.values()), depth)


def _strings_among(values: list[Any], depth: int) -> int:
    if depth > _SHALLOW:
        raise _Deep
    n = 0
    for value in values:
        kind = type(value)
        if kind is str:
            n += 1
        elif kind is dict:
            n += _strings_in(value, depth + 1)
        elif kind is list:
            n += _strings_among(value, depth + 1)
    return n


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_no_constant)
"""Built once: ``json.loads`` with options builds a decoder per call."""
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
"""The decoder's C scanner (what ``decode`` calls after its own Python checks)."""
_PLAIN_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = json.JSONDecoder(
    parse_constant=_no_constant).scan_once  # type: ignore[attr-defined]
"""The same scanner building its objects itself, with no hook (``_without_repeats``)."""
_JSON_SPACE: Final = " \t\n\r"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."

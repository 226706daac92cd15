"""The ``request`` section of a tenant: what its requests may ask for.

    tenants:
      acme:
        request:
          models: [gpt-4o-mini, "gpt-4o*", "text-embedding-3-*"]   # exact names and globs
          max_tokens: 4096          # ceiling on max_tokens, max_completion_tokens, ...
          max_n: 1                  # ceiling on n (and best_of)
          forbidden_fields: [logit_bias, tools]
          max_body_bytes: 1048576   # read at most this much before deciding (default 1 MiB)
          default_max_tokens: 1024  # the completion estimate when a body sets no max_tokens
          ask_usage: true           # add stream_options.include_usage to streaming requests

This is the defence against capability alteration: a stolen key used for models, sizes or
parameters its tenant never uses. Every rule is optional; a tenant without the section reads
no body for it. Globs are ``fnmatch`` patterns matched case-sensitively (``fnmatchcase``), as
model names are.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from gatekeeper.policy.fields import Fields

DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_BODY_BYTES = 256 << 20
"""Larger is a typo: the body is held in memory while it is checked."""
DEFAULT_MAX_TOKENS = 1024
MAX_MODEL_NAME = 256
GLOBBED = 256
"""Longer names never match a glob: no model is named so, and the match stays cheap."""
MAX_CEILING = 10**9
"""Above any context window (``usage.MAX_TOKENS``)."""
_NAME = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_.:/@+-]{0,127}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_GLOB = frozenset("*?[")
_GLOB_AS_LETTER = str.maketrans("*?[]!", "aaaaa")


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    models: tuple[str, ...] | None = None
    """Allowed model names and globs as written; ``None``: any model."""
    max_tokens: int | None = None
    max_n: int | None = None
    forbidden_fields: frozenset[str] = frozenset()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_limit_set: bool = False
    """``max_body_bytes`` was written in the policy: it is a rule, so the body is read."""
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    ask_usage: bool = False
    forbidden_order: tuple[str, ...] = field(init=False, default=(), repr=False)
    """``forbidden_fields`` sorted: the first one found is named the same way every run."""
    exact_models: frozenset[str] = field(init=False, default=frozenset(), repr=False)
    model_pattern: re.Pattern[str] | None = field(init=False, default=None, repr=False)
    """Every glob of ``models`` as one compiled alternation."""
    needs_json: bool = field(init=False, default=False)
    """A rule reads fields of the body: it must be read and parsed as JSON."""
    needs_body: bool = field(init=False, default=False)
    """A rule needs the body read (``needs_json``, or an explicit ``max_body_bytes``)."""
    max_body_digits: int = field(init=False, default=0, repr=False)
    """Digits of ``max_body_bytes``: a shorter content-length is within it, unparsed."""
    globbed: dict[str, bool] = field(init=False, default_factory=dict, repr=False,
                                     compare=False)
    """Model name -> whether a glob allows it, for the first ``GLOBBED`` names asked (clients
    repeat theirs: a regex match per request is not needed); at most ``GLOBBED`` names of at
    most ``MAX_MODEL_NAME`` characters each, however many a client makes up."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "forbidden_order", tuple(sorted(self.forbidden_fields)))
        models = self.models or ()
        globs = [m for m in models if _GLOB & set(m)]
        object.__setattr__(self, "exact_models", frozenset(m for m in models if m not in globs))
        if globs:
            pattern = "|".join(fnmatch.translate(g) for g in globs)
            object.__setattr__(self, "model_pattern", re.compile(pattern))
        needs_json = (self.models is not None or self.max_tokens is not None
                      or self.max_n is not None or bool(self.forbidden_fields) or self.ask_usage)
        object.__setattr__(self, "needs_json", needs_json)
        object.__setattr__(self, "needs_body", needs_json or self.body_limit_set)
        object.__setattr__(self, "max_body_digits", len(str(self.max_body_bytes)))

    @property
    def empty(self) -> bool:
        """No rule at all: nothing to read for this section."""
        return not self.needs_body

    def model_allowed(self, model: str) -> bool:
        if self.models is None or model in self.exact_models:
            return True
        if len(model) > MAX_MODEL_NAME:
            return False  # never a model name, and never kept: a body may hold a huge one
        verdict = self.globbed.get(model)
        if verdict is None:
            pattern = self.model_pattern
            verdict = pattern is not None and pattern.match(model) is not None
            if len(self.globbed) < GLOBBED:
                self.globbed[model] = verdict
        return verdict


NO_REQUEST_RULES = RequestPolicy()


def load_request_policy(fields: Fields) -> RequestPolicy:
    """The tenant's ``request`` mapping (``fields`` is already that section)."""
    models: tuple[str, ...] | None = None
    if fields.has("models"):
        models = tuple(fields.str_list("models", _model_name, "is not a model name or glob"))
        if fields.get("models", (list, str), None) == []:
            fields.error("models", [], "must name at least one model (omit it to allow any)")
    max_tokens = fields.whole("max_tokens", 1, MAX_CEILING)
    max_n = fields.whole("max_n", 1, MAX_CEILING)
    forbidden = fields.str_list("forbidden_fields", _field_name, "is not a top-level field name")
    size = fields.whole("max_body_bytes", 1, MAX_BODY_BYTES)
    default = fields.whole("default_max_tokens", 1, MAX_CEILING)
    ask_usage = fields.get("ask_usage", bool, False)
    fields.finish()
    found = RequestPolicy(
        models, max_tokens, max_n, frozenset(forbidden),
        DEFAULT_MAX_BODY_BYTES if size is None else int(size), size is not None,
        DEFAULT_MAX_TOKENS if default is None else default, bool(ask_usage))
    return NO_REQUEST_RULES if found == NO_REQUEST_RULES else found


def _model_name(text: str) -> str:
    if not _NAME.fullmatch(text.translate(_GLOB_AS_LETTER)):
        raise ValueError(text)
    return text


def _field_name(text: str) -> str:
    if not _FIELD.fullmatch(text):
        raise ValueError(text)
    return text


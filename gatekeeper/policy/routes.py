"""The ``routes`` section: which paths are guarded (``protect``) and which are not (``public``)."""

from __future__ import annotations

from gatekeeper.policy.fields import Fields
from gatekeeper.routes import RoutePolicy


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

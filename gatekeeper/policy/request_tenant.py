"""The ``request_tenant`` section: where a request may name its tenant (a claim to check
against the credential's tenant, never an identity)."""

from __future__ import annotations

import re

from gatekeeper.policy.fields import Fields
from gatekeeper.policy.model import RequestTenantPolicy

_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")


def load_request_tenant(fields: Fields) -> RequestTenantPolicy:
    header = fields.get("header", str, None)
    if header is not None:
        header = header.lower()
        if not _HEADER_NAME.fullmatch(header):
            fields.error("header", header, "is not a header name")
            header = None
    segment = fields.get("path_segment", int, None)
    if segment is not None and not 0 <= segment <= 32:
        fields.error("path_segment", segment, "must be between 0 and 32")
        segment = None
    fields.finish()
    return RequestTenantPolicy(header, segment)

"""Which credential a request carries: one of ours (``gk_...``, or the policy's ``keys.prefix``)
or a JWT, from one of three headers.

Two different credentials in one request are refused: a gateway that checks
``Authorization`` while the app behind reads ``api-key`` can be walked around.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gatekeeper import reasons
from gatekeeper.keys import PREFIXES
from gatekeeper.principal import CredentialKind
from gatekeeper.reasons import Refusal

CREDENTIAL_HEADERS = (b"authorization", b"api-key", b"x-api-key")
MAX_TOKEN_LEN = 8192
_VISIBLE = re.compile(rb"[\x21-\x7e]+")
"""Keys and JWTs are printable ASCII: spaces, control bytes and non-ASCII are never part of one."""

_MALFORMED_SCHEME = Refusal(reasons.CREDENTIAL_MALFORMED,
                            detail="authorization scheme is not Bearer")
_MALFORMED_EMPTY = Refusal(reasons.CREDENTIAL_MALFORMED, detail="empty credential")
_MALFORMED_CHARS = Refusal(reasons.CREDENTIAL_MALFORMED,
                           detail="credential has characters no key or JWT has")
_MALFORMED_LONG = Refusal(reasons.CREDENTIAL_MALFORMED, detail="credential too long")
_MALFORMED_SHAPE = Refusal(reasons.CREDENTIAL_MALFORMED,
                           detail="neither a gatekeeper key nor a JWT")
_CONFLICT = Refusal(reasons.CREDENTIAL_CONFLICT, detail="different credentials in one request")


class Credential(NamedTuple):
    kind: CredentialKind
    token: str
    header: str


def token_from(name: bytes, value: bytes) -> str | Refusal:
    """The bare token carried by one credential header."""
    if name == b"authorization":
        if value[:7].lower() != b"bearer ":
            return _MALFORMED_SCHEME
        value = value[7:]
    value = value.strip()
    if not value:
        return _MALFORMED_EMPTY
    if len(value) > MAX_TOKEN_LEN:
        return _MALFORMED_LONG
    if not _VISIBLE.fullmatch(value):
        return _MALFORMED_CHARS
    return value.decode("ascii")


_SINGLE_MAX = 8192
_SINGLE_MAX_BYTES = 1024
"""Bounds each cache at about 8 MB, whatever a flood of distinct garbage headers sends."""


class CredentialReader:
    """Reads credentials for one set of key prefixes (a runtime's ``keys.prefix`` and
    ``keys.accepted_prefixes``). Its cache is its own: what a header is depends on them."""

    __slots__ = ("_single", "prefixes")

    def __init__(self, prefixes: tuple[str, ...] = PREFIXES) -> None:
        self.prefixes = prefixes
        self._single: dict[tuple[bytes, bytes], Credential | Refusal] = {}

    def read(self, found: list[tuple[bytes, bytes]]) -> Credential | Refusal | None:
        """Pick the request's one credential from every credential header it sent.

        The usual request sends one header, and the same clients send the same one again:
        that case is answered from a bounded cache keyed by the raw header bytes.
        """
        if not found:
            return None
        if len(found) == 1 and len(found[0][1]) <= _SINGLE_MAX_BYTES:
            header = found[0]
            single = self._single
            hit = single.get(header)
            if hit is None:
                if len(single) >= _SINGLE_MAX:
                    single.clear()
                hit = single[header] = _parse(found, self.prefixes)
            return hit
        return _parse(found, self.prefixes)


_DEFAULT = CredentialReader()
credential_from = _DEFAULT.read
"""The default prefix's (``gk_``) reader."""
_single = _DEFAULT._single


def _parse(found: list[tuple[bytes, bytes]], prefixes: tuple[str, ...]) -> Credential | Refusal:
    name, value = found[0]
    token = token_from(name, value)
    if isinstance(token, Refusal):
        return token
    for other_name, other_value in found[1:]:
        if token_from(other_name, other_value) != token:
            return _CONFLICT
    if token.startswith(prefixes):
        return Credential(CredentialKind.API_KEY, token, name.decode())
    if token.count(".") == 2:
        return Credential(CredentialKind.JWT, token, name.decode())
    return _MALFORMED_SHAPE

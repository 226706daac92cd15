"""What gatekeeper knows about a request before it decides, read once from its header list.

Two steps, both plain functions of plain data (no ASGI scope): ``scan`` is one loop over the
raw header list that keeps only the headers the policy needs, as raw bytes; ``facts`` turns a
scan into ``RequestFacts`` (client address, credential, tenant hint), and runs only when no
decision for the same raw inputs is cached. The middleware and ``replay`` call both.

Header names are matched with ``_`` read as ``-``: h11 and httptools accept ``x_api_key``,
and an app behind asgiref's WSGI adapter (any Flask app) reads it as ``x-api-key``. A
credential or tenant sent under either spelling is therefore checked like the other (two
different values conflict), and a forwarding header spelt with ``_`` from a trusted proxy is
refused, since the app behind may read it as the real one.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from gatekeeper import reasons
from gatekeeper.client_address import peer_address, resolve_client
from gatekeeper.credentials import CREDENTIAL_HEADERS, Credential, CredentialReader
from gatekeeper.networks import IPAddr
from gatekeeper.policy.model import Policy
from gatekeeper.reasons import Refusal
from gatekeeper.routes import irregular, normalise, route_path
from gatekeeper.types import Scope

_TENANT_CONFLICT = Refusal(reasons.TENANT_MISMATCH,
                           detail="request names two different tenants")
_FORWARDED_SPELLING = Refusal(reasons.FORWARDED_MALFORMED,
                              detail="forwarding header spelt with '_'")

# What a header is to the scan: its slot in the scan, and its canonical name.
_CREDENTIAL: Final = 0
_FORWARDED: Final = 1
_FORWARDED_ODD: Final = 2
_TENANT: Final = 3
_CONTENT_TYPE: Final = 4
_CONTENT_LENGTH: Final = 5
_USER_AGENT: Final = 6
_CDN_COUNTRY: Final = 7

Headers = list[tuple[bytes, bytes]]
Scan = tuple[Headers, list[bytes] | None, list[bytes] | None, bool, bytes | None,
             bytes | None, bytes | None, bytes | None]
"""(credential headers by canonical name, forwarding values, tenant values, an odd forwarding
spelling was seen, content-type, content-length, user-agent, the CDN country header): raw
bytes, nothing decoded."""


class RequestFacts(NamedTuple):
    method: str
    path: str
    client: IPAddr | None
    credential: Credential | None
    tenant_hint: str | None
    user_agent: str | None
    problem: Refusal | None
    """The first thing wrong with the request itself; set, it decides the refusal."""
    peer_trusted: bool = False
    """The TCP peer is a trusted proxy: what it says (forwarding, a CDN country) is believed."""
    route: str | None = None
    """The path below the mount point, as routes and tenant segments saw it."""
    content_length: int | None = None
    content_type: str | None = None
    credential_header: str | None = None
    """The (first) credential header sent, even when its value was refused."""


def _spellings(name: bytes) -> tuple[bytes, ...]:
    return (name, name.replace(b"-", b"_")) if b"-" in name else (name,)


class FactReader:
    """Precomputes which headers matter under a policy, then reads requests with one loop."""

    __slots__ = ("_client_policy", "_credentials", "_segment", "_slots")

    def __init__(self, policy: Policy, *, user_agent: bool = False) -> None:
        """``user_agent``: read it only when some stage uses it (the resale signals will)."""
        self._client_policy = policy.client_address
        self._credentials = CredentialReader(policy.keys.prefixes).read
        slots: dict[bytes, tuple[int, bytes]] = {}
        for name in CREDENTIAL_HEADERS:
            for spelling in _spellings(name):
                slots[spelling] = (_CREDENTIAL, name)
        # Forwarding headers are read only when some proxy is trusted: otherwise they are noise.
        if policy.client_address.trusted_proxies:
            forwarded = policy.client_address.header.encode()
            for spelling in _spellings(forwarded):
                slots[spelling] = (_FORWARDED if spelling == forwarded else _FORWARDED_ODD,
                                   forwarded)
        header = policy.request_tenant.header
        if header:
            for spelling in _spellings(header.encode()):
                slots[spelling] = (_TENANT, header.encode())
        slots[b"content-type"] = (_CONTENT_TYPE, b"content-type")
        slots[b"content-length"] = (_CONTENT_LENGTH, b"content-length")
        if user_agent:
            slots[b"user-agent"] = (_USER_AGENT, b"user-agent")
        cdn = policy.geo.cdn_header
        if cdn and policy.client_address.trusted_proxies:
            # only its exact spelling: a proxy overwrites that one, not ``cf_ipcountry``
            slots[cdn.encode()] = (_CDN_COUNTRY, cdn.encode())
        self._slots = slots
        self._segment = policy.request_tenant.path_segment

    @property
    def reads_path_tenant(self) -> bool:
        return self._segment is not None

    def scan(self, headers: Headers) -> Scan:
        """One pass over the raw header list; the common header costs one dict lookup."""
        found: Headers = []
        forwarded: list[bytes] | None = None
        tenant: list[bytes] | None = None
        odd = False
        ctype = length = agent = cdn = None
        slots = self._slots
        for name, value in headers:
            hit = slots.get(name)
            if hit is None:
                if name.islower():
                    continue
                # ASGI promises lowercase names; a server that breaks it must not make
                # gatekeeper miss a credential, forwarding or tenant header
                hit = slots.get(name.lower())
                if hit is None:
                    continue
            slot = hit[0]
            if slot == _CREDENTIAL:
                found.append((hit[1], value))
            elif slot == _CONTENT_TYPE:
                ctype = value
            elif slot == _CONTENT_LENGTH:
                length = value
            elif slot == _FORWARDED:
                if forwarded is None:
                    forwarded = []
                forwarded.append(value)
            elif slot == _TENANT:
                if tenant is None:
                    tenant = []
                tenant.append(value.strip())
            elif slot == _FORWARDED_ODD:
                odd = True
            elif slot == _CDN_COUNTRY:
                # two differing copies cancel out (b"" is no answer), whatever follows
                cdn = value if cdn is None or cdn == value else b""
            else:
                agent = value
        return found, forwarded, tenant, odd, ctype, length, agent, cdn

    def facts(self, scan: Scan, method: str, path: str, below: str,
              peer: object) -> RequestFacts:
        """The request's facts from a scan; ``peer`` is ASGI's ``scope["client"]``."""
        found, forwarded, tenant, odd, ctype, length, agent, _ = scan
        problem: Refusal | None = None
        policy = self._client_policy
        address = peer_address(peer)
        trusted = address is not None and address in policy.trusted_proxies
        client = resolve_client(
            peer, None if forwarded is None else [v.decode("latin-1") for v in forwarded],
            policy)
        if isinstance(client, Refusal):
            problem, client = client, None
        elif odd and trusted:
            problem, client = _FORWARDED_SPELLING, None

        credential = self._credentials(found)
        if isinstance(credential, Refusal):
            problem, credential = problem or credential, None

        hint = self._tenant_hint(tenant, below)
        if isinstance(hint, Refusal):
            problem, hint = problem or hint, None

        return RequestFacts(
            method, path, client, credential, hint,
            None if agent is None else agent.decode("latin-1"), problem, trusted, below,
            _length(length), None if ctype is None else ctype.decode("latin-1"),
            found[0][0].decode() if found else None)

    def read(self, scope: Scope, below: str | None = None) -> RequestFacts:
        """Scan and facts in one call, from an ASGI scope (tests and tools)."""
        return self.facts(self.scan(scope["headers"]), scope.get("method", "GET"),
                          scope["path"], route_path(scope) if below is None else below,
                          scope.get("client"))

    def _tenant_hint(self, values: list[bytes] | None, path: str) -> str | Refusal | None:
        named: set[str] = set()
        if values:
            named.update(v.decode("latin-1") for v in values)
        if self._segment is not None:
            named.update(self._segment_of(path))
            if "%" in path or ";" in path or irregular(path):
                # what a router behind us sees after decoding and resolving dot segments:
                # '/v1/acme/../globex' names globex, '/v1//globex' is not a way to name none
                named.update(self._segment_of(normalise(path, strip_params=True)))
        if not named:
            return None
        if len(named) > 1:
            return _TENANT_CONFLICT
        return named.pop()

    def _segment_of(self, path: str) -> list[str]:
        assert self._segment is not None
        parts = path.split("/", self._segment + 2)
        if len(parts) > self._segment + 1 and parts[self._segment + 1]:
            return [parts[self._segment + 1]]
        return []


def _length(raw: bytes | None) -> int | None:
    """A content-length the body stage can trust; None when absent or not one number."""
    if raw is None or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)

"""What gatekeeper knows about a request before it decides, read once from the ASGI scope.

One loop over the raw header list picks out only the headers the policy needs; nothing is
decoded that is not used. Later stages (limits, geo, resale) take these facts as they are.
"""

from __future__ import annotations

from typing import NamedTuple

from gatekeeper import reasons
from gatekeeper.client_address import resolve_client
from gatekeeper.credentials import CREDENTIAL_HEADERS, Credential, credential_from
from gatekeeper.networks import IPAddr
from gatekeeper.policy.model import Policy
from gatekeeper.reasons import Refusal
from gatekeeper.routes import irregular, normalise, route_path
from gatekeeper.types import Scope

_TENANT_CONFLICT = Refusal(reasons.TENANT_MISMATCH,
                           detail="request names two different tenants")


class RequestFacts(NamedTuple):
    method: str
    path: str
    client: IPAddr | None
    credential: Credential | None
    tenant_hint: str | None
    user_agent: str | None
    problem: Refusal | None
    """The first thing wrong with the request itself; set, it decides the refusal."""


class FactReader:
    """Precomputes which headers matter under a policy, then reads requests with one loop."""

    __slots__ = ("_client_policy", "_forwarded", "_segment", "_tenant_header")

    def __init__(self, policy: Policy) -> None:
        self._client_policy = policy.client_address
        # Forwarding headers are read only when some proxy is trusted: otherwise they are noise.
        self._forwarded = (policy.client_address.header.encode()
                           if policy.client_address.trusted_proxies else None)
        header = policy.request_tenant.header
        self._tenant_header = header.encode() if header else None
        self._segment = policy.request_tenant.path_segment

    def read(self, scope: Scope, below: str | None = None) -> RequestFacts:
        """``below``: the path under the mount point, when the caller has it already."""
        found: list[tuple[bytes, bytes]] = []
        forwarded: list[str] | None = None
        tenant: list[bytes] | None = None
        user_agent: bytes | None = None
        fwd_name, tenant_name = self._forwarded, self._tenant_header
        for name, value in scope["headers"]:
            if not name.islower():
                name = name.lower()  # ASGI promises lowercase names; a server that breaks it
                # must not make gatekeeper miss a forwarding or tenant header
            if name in CREDENTIAL_HEADERS:
                found.append((name, value))
            elif name == b"user-agent":
                user_agent = value
            elif name == fwd_name:
                if forwarded is None:
                    forwarded = []
                forwarded.append(value.decode("latin-1"))
            elif name == tenant_name:
                if tenant is None:
                    tenant = []
                tenant.append(value.strip())

        path: str = scope["path"]
        problem: Refusal | None = None
        client = resolve_client(scope.get("client"), forwarded, self._client_policy)
        if isinstance(client, Refusal):
            problem, client = client, None

        credential = credential_from(found)
        if isinstance(credential, Refusal):
            problem, credential = problem or credential, None

        hint = self._tenant_hint(tenant, route_path(scope) if below is None else below)
        if isinstance(hint, Refusal):
            problem, hint = problem or hint, None

        return RequestFacts(
            scope.get("method", "GET"), path, client, credential, hint,
            None if user_agent is None else user_agent.decode("latin-1"), problem)

    def _tenant_hint(self, values: list[bytes] | None, path: str) -> str | Refusal | None:
        named: set[str] = set()
        if values:
            named.update(v.decode("latin-1") for v in values)
        if self._segment is not None:
            named.update(self._segment_of(path))
            if "%" in path or irregular(path):
                # what a router behind us sees after decoding and resolving dot segments:
                # '/v1/acme/../globex' names globex, '/v1//globex' is not a way to name none
                named.update(self._segment_of(normalise(path)))
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

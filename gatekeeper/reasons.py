"""Every refusal gatekeeper can give, in one table: code, HTTP status, what it means.

Bodies follow OpenAI's error shape so official clients raise the matching exception
(400 -> BadRequestError, 401 -> AuthenticationError, 403 -> PermissionDeniedError,
429 -> RateLimitError). Bodies and headers are built once at import; a refusal costs no JSON
encoding, and numbers (``retry-after``) travel only in the decision's headers. Client-facing
messages never say which networks, tenants or keys would have worked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

STAGES = ("route", "facts", "authenticate", "decide", "body", "store", "settle", "any")
"""The pipeline stages that can decide a refusal, in request order (``pipeline.py``)."""


@dataclass(frozen=True, slots=True, eq=False)
class Reason:
    """One refusal reason. Compared and hashed by identity: every reason is a module singleton,
    and a dataclass ``__hash__`` written in Python would cost on every metrics update."""

    code: str
    status: int
    error_type: str
    message: str
    """What the client is told."""
    meaning: str
    """What an operator reads in the README table."""
    stage: str = "decide"
    """The pipeline stage that decides it."""
    wire_code: str = ""
    """The ``error.code`` the client sees when it differs from ``code`` (OpenAI's own names)."""
    index: int = field(default=0, compare=False)
    """Position in ``(OK, *REFUSALS)``: metrics count by a list index, not a dict lookup."""
    body: bytes = field(init=False, repr=False, compare=False)
    headers: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}")
        payload = {"error": {"message": self.message, "type": self.error_type,
                             "param": None, "code": self.wire_code or self.code}}
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store")]
        if self.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="gatekeeper"'))
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "headers", tuple(headers))


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 413: "invalid_request_error", 415: "invalid_request_error",
               429: "rate_limit_exceeded", 503: "service_unavailable"}
"""OpenAI's ``error.type`` for each status gatekeeper answers with."""


def _r(code: str, status: int, stage: str, message: str, meaning: str) -> Reason:
    return Reason(code, status, ERROR_TYPES[status], message, meaning, stage)


OK = Reason("ok", 200, "", "", "The request was allowed.", "any")
"""Not a refusal: the reason label of an allowed decision."""

CREDENTIAL_MISSING = _r(
    "credential_missing", 401, "facts",
    "No API key provided. Send it as 'Authorization: Bearer <key>'.",
    "No credential in `Authorization: Bearer`, `api-key` or `x-api-key`.")
CREDENTIAL_MALFORMED = _r(
    "credential_malformed", 401, "facts",
    "The API key or token is malformed.",
    "A credential header is present but is not a well-formed key (prefix, length, alphabet, "
    "checksum) or JWT; refused before any store lookup.")
CREDENTIAL_CONFLICT = _r(
    "credential_conflict", 401, "facts",
    "More than one different credential was sent.",
    "Two credential headers (or two copies of one) carry different values; the request is "
    "ambiguous, so neither is trusted.")
KEY_UNKNOWN = _r(
    "key_unknown", 401, "authenticate",
    "Incorrect API key provided.",
    "A well-formed key whose id is not in the store, or whose secret does not match.")
KEY_REVOKED = _r(
    "key_revoked", 401, "decide",
    "This API key has been revoked.",
    "The key record's status is `revoked`.")
KEY_SUSPENDED = _r(
    "key_suspended", 401, "decide",
    "This API key is suspended.",
    "The key record's status is `suspended`.")
KEY_EXPIRED = _r(
    "key_expired", 401, "decide",
    "This API key has expired.",
    "The key's expiry (or the end of its rotation grace period) has passed.")
TOKEN_INVALID = _r(
    "token_invalid", 401, "authenticate",
    "The bearer token is not valid.",
    "A JWT failed verification: unknown issuer, algorithm not pinned for that issuer "
    "(including `none`), bad signature, wrong audience, unknown key id, missing claim.")
TOKEN_EXPIRED = _r(
    "token_expired", 401, "decide",
    "The bearer token has expired.",
    "A JWT whose `exp` has passed (after the issuer's leeway).")
TENANT_UNKNOWN = _r(
    "tenant_unknown", 403, "decide",
    "This credential is not allowed to use this service.",
    "The credential's tenant is not in the policy.")
TENANT_DISABLED = _r(
    "tenant_disabled", 403, "decide",
    "This credential is not allowed to use this service.",
    "The credential's tenant is marked `disabled` in the policy.")
TENANT_MISMATCH = _r(
    "tenant_mismatch", 403, "decide",
    "This credential does not belong to the requested tenant.",
    "The request names a tenant (header or path part) other than the credential's tenant.")
NETWORK_NOT_ALLOWED = _r(
    "network_not_allowed", 403, "decide",
    "This credential is not allowed from this network.",
    "The client address is outside the tenant's or the key's allowed networks (or unknown "
    "while networks are required). The allowed networks are never echoed.")
COUNTRY_NOT_ALLOWED = _r(
    "country_not_allowed", 403, "decide",
    "This credential is not allowed from this location.",
    "The client's country (CDN header from a trusted proxy, `.mmdb` file or the embedded "
    "default) is outside the tenant's or the key's country rule, or unknown while the rule "
    "says `unknown: deny`. The allowed countries are never echoed.")
IMPOSSIBLE_TRAVEL = _r(
    "impossible_travel", 403, "decide",
    "This credential is not allowed from this location.",
    "The key was used from a place it could not have reached since its previous use (faster "
    "than the tenant's `travel.max_kmh`, same-country and neighbouring pairs skipped) and the "
    "tenant's `travel.action` is `deny`; with `flag` the request passes, marked.")
RESALE_SUSPECTED = _r(
    "resale_suspected", 403, "decide",
    "This credential is not allowed to make this request.",
    "The key's resale score reached `resale.thresholds.block` under `mode: enforce` (the "
    "score's top reasons go to the audit line, never to the client).")
RESALE_THROTTLED = _r(
    "resale_throttled", 429, "decide",
    "Rate limit reached for requests. Retry after the time in the retry-after header.",
    "The key's resale score reached `resale.thresholds.throttle` under `mode: enforce`: it "
    "passes at its own usual pace (its baseline per short window times "
    "`resale.throttle_factor`) and the rest is refused; `retry-after` says when it may go on.")
FORWARDED_MALFORMED = _r(
    "forwarded_malformed", 400, "facts",
    "The request's forwarding headers could not be parsed.",
    "A trusted proxy sent an `X-Forwarded-For` / `Forwarded` hop that is not an address, so "
    "the client cannot be identified.")
STORE_UNAVAILABLE = _r(
    "store_unavailable", 503, "authenticate",
    "The service is temporarily unable to verify credentials. Retry later.",
    "The key store failed to answer on a cache miss; gatekeeper fails closed.")
AUTH_UNAVAILABLE = _r(
    "auth_unavailable", 503, "authenticate",
    "The service is temporarily unable to verify tokens. Retry later.",
    "A JWKS document needed to verify a JWT could not be fetched.")
INTERNAL_ERROR = _r(
    "internal_error", 503, "any",
    "The service could not verify this request. Retry later.",
    "gatekeeper itself failed while deciding (a bug: logged with its traceback). It fails "
    "closed: the request does not reach the app.")

REQUEST_TARGET_INVALID = _r(
    "request_target_invalid", 400, "route",
    "The request target is not a path this service accepts.",
    "The request-target names no path: `OPTIONS *` or CONNECT's `host:port`. Absolute-form "
    "(`http://host/v1/x`) and slash-less targets are re-rooted and checked like any path.")

RATE_LIMITED = _r(
    "rate_limited", 429, "store",
    "Rate limit reached for requests. Retry after the time in the retry-after header.",
    "A requests-per-period limit (per key, tenant or client address) has no room; "
    "`retry-after` says when it will.")
TOKENS_LIMITED = _r(
    "tokens_limited", 429, "store",
    "Rate limit reached for tokens. Retry after the time in the retry-after header.",
    "A tokens-per-period limit has no room for this request's token estimate (an estimate "
    "larger than the whole limit gets no `retry-after`: it can never pass).")
CONCURRENCY_LIMITED = _r(
    "concurrency_limited", 429, "store",
    "Too many concurrent requests. Retry when one of them has finished.",
    "Every concurrency slot (per key, tenant or client address) is held by a request in "
    "flight.")
QUOTA_EXCEEDED = Reason(
    "quota_exceeded", 429, "insufficient_quota",
    "You exceeded your current quota. It resets at the start of the next period.",
    "A daily or monthly (UTC) request, token or spend quota is used up; the body's code is "
    "OpenAI's `insufficient_quota`.", "store", "insufficient_quota")

BODY_TOO_LARGE = _r(
    "body_too_large", 413, "body",
    "The request body is too large.",
    "The body is over the tenant's `request.max_body_bytes` (default 1 MiB); reading stopped "
    "at the limit, nothing past it was held.")
BODY_INVALID = _r(
    "body_invalid", 400, "body",
    "The request body is not a valid JSON object.",
    "A JSON body (by content type, or any body a JSON rule must read) is not UTF-8, not JSON, "
    "not an object, repeats a key (parsers disagree on which copy wins), or gives a field a "
    "rule reads the wrong type (`model` not a string, `max_tokens` or `n` not a whole number).")
BODY_NOT_JSON = _r(
    "body_not_json", 415, "body",
    "This request's body cannot be checked against this credential's request policy; "
    "send it as JSON.",
    "The tenant's `request` rules read JSON fields, and the body is not JSON (e.g. a multipart "
    "upload): it cannot be checked, so it is refused rather than passed unchecked.")
MODEL_NOT_ALLOWED = _r(
    "model_not_allowed", 403, "body",
    "This credential is not allowed to use this model.",
    "The body's `model` matches none of the tenant's `request.models` names or globs. The "
    "allowed models are never echoed.")
FIELD_NOT_ALLOWED = _r(
    "field_not_allowed", 403, "body",
    "This credential is not allowed to use a parameter in this request.",
    "The body sets (to anything but null) a top-level field in the tenant's "
    "`request.forbidden_fields`; the audit detail names it.")
MAX_TOKENS_TOO_LARGE = _r(
    "max_tokens_too_large", 400, "body",
    "The requested maximum number of tokens is larger than this credential allows.",
    "`max_tokens`, `max_completion_tokens` or `max_output_tokens` is over the tenant's "
    "`request.max_tokens`.")
N_TOO_LARGE = _r(
    "n_too_large", 400, "body",
    "The requested number of choices is larger than this credential allows.",
    "`n` (or `best_of`) is over the tenant's `request.max_n`.")

REFUSALS: tuple[Reason, ...] = (
    REQUEST_TARGET_INVALID, CREDENTIAL_MISSING, CREDENTIAL_MALFORMED, CREDENTIAL_CONFLICT,
    KEY_UNKNOWN, KEY_REVOKED, KEY_SUSPENDED, KEY_EXPIRED, TOKEN_INVALID, TOKEN_EXPIRED,
    TENANT_UNKNOWN, TENANT_DISABLED,
    TENANT_MISMATCH, NETWORK_NOT_ALLOWED, COUNTRY_NOT_ALLOWED, IMPOSSIBLE_TRAVEL,
    RESALE_SUSPECTED, RESALE_THROTTLED,
    FORWARDED_MALFORMED,
    STORE_UNAVAILABLE, AUTH_UNAVAILABLE, INTERNAL_ERROR, RATE_LIMITED, TOKENS_LIMITED,
    CONCURRENCY_LIMITED, QUOTA_EXCEEDED, BODY_TOO_LARGE, BODY_INVALID, BODY_NOT_JSON,
    MODEL_NOT_ALLOWED, FIELD_NOT_ALLOWED, MAX_TOKENS_TOO_LARGE, N_TOO_LARGE,
)
"""The table, in README order. A test keeps the README in step with it."""

for _i, _reason in enumerate((OK, *REFUSALS)):
    object.__setattr__(_reason, "index", _i)


def reason_table_markdown() -> str:
    """The README table, generated from the code so the two cannot drift apart."""
    rows = ["| code | status | stage | meaning |", "| --- | --- | --- | --- |"]
    rows += [f"| `{r.code}` | {r.status} | {r.stage} | {r.meaning} |" for r in REFUSALS]
    return "\n".join(rows)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A reason plus what the audit line needs to explain it (never a secret)."""

    reason: Reason
    key_id: str | None = None
    detail: str = ""

"""Which credential a request carries: three headers, one credential, and every odd input a
clear refusal rather than an exception."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gatekeeper import FactReader, compile_policy, new_key, parse_key
from gatekeeper.credentials import (
    CREDENTIAL_HEADERS,
    MAX_TOKEN_LEN,
    Credential,
    credential_from,
    token_from,
)
from gatekeeper.principal import CredentialKind
from gatekeeper.reasons import CREDENTIAL_CONFLICT, CREDENTIAL_MALFORMED, Refusal

KEY = new_key(b"c" * 40, "acme", 0.0)[0]
OTHER_KEY = new_key(b"c" * 40, "acme", 0.0)[0]
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl"
H = list[tuple[bytes, bytes]]

FULL_POLICY: dict[str, Any] = {  # forwarding headers trusted and a tenant header read too
    "routes": {"protect": ["/v1/*"], "public": ["/healthz"]},
    "client_address": {"trusted_proxies": ["10.0.0.0/8"]},
    "request_tenant": {"header": "x-tenant-id"},
    "tenants": {"acme": {"allowed_networks": ["192.0.2.0/24"]}, "globex": {}},
}


def bearer(token: str | bytes) -> tuple[bytes, bytes]:
    raw = token.encode() if isinstance(token, str) else token
    return (b"authorization", b"Bearer " + raw)


def refused(result: object, reason: Any = CREDENTIAL_MALFORMED) -> Refusal:
    assert isinstance(result, Refusal), result
    assert result.reason is reason
    assert result.detail  # a refusal always says why, for the audit line
    assert result.key_id is None  # nothing from an unverified header is echoed as a key id
    return result


# --- the three headers --------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "header"), [
    ([bearer(KEY)], "authorization"),
    ([(b"api-key", KEY.encode())], "api-key"),
    ([(b"x-api-key", KEY.encode())], "x-api-key"),
])
def test_a_key_in_any_credential_header(headers: H, header: str) -> None:
    assert credential_from(headers) == Credential(CredentialKind.API_KEY, KEY, header)


def test_a_jwt_is_recognised_by_its_three_parts() -> None:
    assert credential_from([bearer(JWT)]) == Credential(CredentialKind.JWT, JWT, "authorization")
    assert credential_from([(b"api-key", JWT.encode())]) == Credential(
        CredentialKind.JWT, JWT, "api-key")


def test_no_credential_header_is_none() -> None:
    assert credential_from([]) is None


def test_credential_headers_are_the_documented_three() -> None:
    assert set(CREDENTIAL_HEADERS) == {b"authorization", b"api-key", b"x-api-key"}


# --- several headers ----------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    [bearer(KEY), (b"api-key", KEY.encode())],
    [(b"x-api-key", KEY.encode()), bearer(KEY)],
    [bearer(KEY), (b"api-key", KEY.encode()), (b"x-api-key", KEY.encode())],
    [bearer(KEY), bearer(KEY)],
    [(b"api-key", KEY.encode()), (b"api-key", b"  " + KEY.encode() + b" ")],
])
def test_the_same_credential_in_several_headers_is_fine(headers: H) -> None:
    result = credential_from(headers)
    assert isinstance(result, Credential)
    assert result.token == KEY
    assert result.header == headers[0][0].decode()


@pytest.mark.parametrize("headers", [
    [bearer(KEY), (b"api-key", OTHER_KEY.encode())],
    [(b"x-api-key", KEY.encode()), bearer(JWT)],
    [bearer(KEY), bearer(OTHER_KEY)],
    [(b"api-key", KEY.encode()), (b"x-api-key", KEY.encode()), bearer(OTHER_KEY)],
    [bearer(KEY), (b"api-key", b"")],
    [bearer(KEY), (b"authorization", b"Basic dXNlcjpwYXNz")],
    [bearer(KEY), (b"x-api-key", KEY.encode() + b"\xff")],
])
def test_different_credentials_in_one_request_conflict(headers: H) -> None:
    refused(credential_from(headers), CREDENTIAL_CONFLICT)


def test_a_bad_first_header_is_refused_whatever_follows() -> None:
    refused(credential_from([(b"api-key", b""), bearer(KEY)]))
    refused(credential_from([(b"authorization", b"Basic abc"), (b"api-key", KEY.encode())]))


# --- odd inputs: clear refusals, never exceptions -----------------------------------------

@pytest.mark.parametrize("value", [
    b"Basic dXNlcjpwYXNz",
    b"Digest username=x",
    b"Token " + KEY.encode(),
    b"Bearer",  # no space, no token
    b"Bearer\t" + KEY.encode(),
    b"Bearer:" + KEY.encode(),
    b"Bearer" + KEY.encode(),
    KEY.encode(),  # a bare key in Authorization has no scheme
    b" Bearer " + KEY.encode(),
    b"",
])
def test_authorization_must_use_the_bearer_scheme(value: bytes) -> None:
    result = refused(credential_from([(b"authorization", value)]))
    assert "Bearer" in result.detail


@pytest.mark.parametrize("value", [b"Bearer ", b"Bearer    ", b"Bearer \t "])
def test_an_empty_bearer_is_refused(value: bytes) -> None:
    assert refused(credential_from([(b"authorization", value)])).detail == "empty credential"


@pytest.mark.parametrize("name", [b"api-key", b"x-api-key"])
@pytest.mark.parametrize("value", [b"", b"   ", b"\t"])
def test_an_empty_key_header_is_refused(name: bytes, value: bytes) -> None:
    assert refused(credential_from([(name, value)])).detail == "empty credential"


@pytest.mark.parametrize("scheme", [b"bearer", b"BEARER", b"bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(scheme: bytes) -> None:
    # RFC 7235 section 2.1: auth-scheme is case-insensitive, and clients do send `bearer`.
    result = credential_from([(b"authorization", scheme + b" " + KEY.encode())])
    assert result == Credential(CredentialKind.API_KEY, KEY, "authorization")


@pytest.mark.parametrize("value", [
    b"Bearer  " + KEY.encode(),
    b"Bearer " + KEY.encode() + b"   ",
    b"Bearer   " + KEY.encode() + b"\t",
])
def test_padding_around_the_token_is_ignored(value: bytes) -> None:
    assert credential_from([(b"authorization", value)]) == Credential(
        CredentialKind.API_KEY, KEY, "authorization")


@pytest.mark.parametrize("headers", [
    [bearer(KEY[:20] + " " + KEY[20:])],
    [bearer(KEY + " extra")],
    [bearer(KEY + "\t" + KEY)],
    [(b"api-key", b"Bearer " + KEY.encode())],
    [(b"x-api-key", KEY.encode() + b" " + KEY.encode())],
])
def test_whitespace_inside_the_token_is_refused(headers: H) -> None:
    assert "characters" in refused(credential_from(headers)).detail


@pytest.mark.parametrize("raw", [
    KEY.encode()[:10] + "\u00e9".encode() + KEY.encode()[11:],
    b"\xff\xfe\xfd",
    b"gk_\x80" + b"A" * 49,
    "\u043a\u043b\u044e\u0447".encode(),  # Cyrillic
    b"\xe2\x80\x8b" + KEY.encode(),  # zero-width space in front
])
@pytest.mark.parametrize("name", list(CREDENTIAL_HEADERS))
def test_non_ascii_bytes_are_refused(raw: bytes, name: bytes) -> None:
    value = b"Bearer " + raw if name == b"authorization" else raw
    assert "characters" in refused(credential_from([(name, value)])).detail


@pytest.mark.parametrize("name", list(CREDENTIAL_HEADERS))
def test_very_long_values_are_refused(name: bytes) -> None:
    token = b"a." * 50_000 + b"b"
    value = b"Bearer " + token if name == b"authorization" else token
    assert refused(credential_from([(name, value)])).detail == "credential too long"


def test_the_length_limit_is_exact() -> None:
    at_limit = "a" * (MAX_TOKEN_LEN - 4) + ".b.c"
    assert len(at_limit) == MAX_TOKEN_LEN
    result = credential_from([bearer(at_limit)])
    assert isinstance(result, Credential) and result.kind is CredentialKind.JWT
    refused(credential_from([bearer(at_limit + "d")]))
    refused(credential_from([bearer("gk_" + "A" * 100_000)]))


@pytest.mark.parametrize("token", [
    "sk-proj-abc123", "not-a-key", "a.b", "a.b.c.d", "gk", "GK_" + KEY[3:], "Gk_" + KEY[3:],
])
def test_neither_our_key_nor_a_jwt_is_refused(token: str) -> None:
    assert "neither" in refused(credential_from([bearer(token)])).detail


def test_a_gk_prefixed_token_is_an_api_key_even_if_its_checksum_is_wrong() -> None:
    # credential_from picks the kind; the checksum is judged by the authenticator, which
    # refuses it before any store lookup (see tests/test_keys.py)
    typo = KEY[:-1] + ("A" if KEY[-1] != "A" else "B")
    result = credential_from([bearer(typo)])
    assert isinstance(result, Credential) and result.kind is CredentialKind.API_KEY
    assert parse_key(result.token) is None


def test_token_from_returns_the_bare_token() -> None:
    assert token_from(b"authorization", b"Bearer " + KEY.encode()) == KEY
    assert token_from(b"api-key", KEY.encode()) == KEY
    assert token_from(b"x-api-key", b" " + KEY.encode() + b" ") == KEY


def test_random_header_values_never_raise() -> None:
    rng = random.Random(20240601)
    pieces = [b"Bearer ", b"bearer ", b"Basic ", b" ", b"\t", b"", b".", b"gk_", KEY.encode(),
              JWT.encode(), b"\xff", b"\xc3\xa9", b"\x00", b"\r\n", b"a" * 9000, b","]
    kinds = {type(None), Credential, Refusal}
    for _ in range(3000):
        headers = [
            (rng.choice(CREDENTIAL_HEADERS),
             b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))))
            for _ in range(rng.randint(0, 3))
        ]
        result = credential_from(headers)
        assert type(result) in kinds
        if isinstance(result, Refusal):
            assert result.reason in (CREDENTIAL_MALFORMED, CREDENTIAL_CONFLICT)
        if isinstance(result, Credential):
            assert result.token.isascii()
            assert " " not in result.token and "\t" not in result.token
            assert 0 < len(result.token) <= MAX_TOKEN_LEN


# --- through FactReader: real ASGI scopes ---------------------------------------------------

def scope(headers: H, path: str = "/v1/chat/completions",
          client: tuple[str, int] | None = ("192.0.2.10", 40000)) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": headers, "client": client}


@pytest.fixture(params=["minimal", "full"])
def reader(request: pytest.FixtureRequest) -> FactReader:
    data = {"tenants": {"acme": {}}} if request.param == "minimal" else FULL_POLICY
    return FactReader(compile_policy(data), user_agent=True)


def test_user_agent_is_read_only_when_a_stage_asks_for_it() -> None:
    headers = [(b"user-agent", b"openai-python/1.40"), bearer(KEY)]
    assert FactReader(compile_policy({})).read(scope(headers)).user_agent is None
    assert FactReader(compile_policy({}), user_agent=True).read(
        scope(headers)).user_agent == "openai-python/1.40"


def test_fact_reader_finds_the_credential_among_other_headers(reader: FactReader) -> None:
    facts = reader.read(scope([
        (b"host", b"api.test"), (b"user-agent", b"openai-python/1.40"),
        (b"content-type", b"application/json"), (b"x-api-key", KEY.encode()),
        (b"cookie", b"authorization=Bearer nope"),
    ]))
    assert facts.problem is None
    assert facts.credential == Credential(CredentialKind.API_KEY, KEY, "x-api-key")
    assert facts.user_agent == "openai-python/1.40"
    assert facts.method == "POST"
    assert facts.path == "/v1/chat/completions"


def test_fact_reader_without_credentials(reader: FactReader) -> None:
    facts = reader.read(scope([(b"host", b"api.test")]))
    assert facts.credential is None
    assert facts.problem is None


def test_fact_reader_same_key_twice_is_fine(reader: FactReader) -> None:
    facts = reader.read(scope([bearer(KEY), (b"api-key", KEY.encode())]))
    assert facts.problem is None
    assert facts.credential == Credential(CredentialKind.API_KEY, KEY, "authorization")


def test_fact_reader_conflict_is_the_problem(reader: FactReader) -> None:
    facts = reader.read(scope([bearer(KEY), (b"host", b"x"), (b"api-key", OTHER_KEY.encode())]))
    assert facts.credential is None
    refused(facts.problem, CREDENTIAL_CONFLICT)


@pytest.mark.parametrize("headers", [
    [(b"authorization", b"Basic dXNlcjpwYXNz")],
    [(b"authorization", b"Bearer ")],
    [bearer(b"\xff" * 60)],
    [bearer(b"x" * 100_000)],
    [(b"x-api-key", b"a b")],
])
def test_fact_reader_malformed_credentials_are_the_problem(reader: FactReader,
                                                           headers: H) -> None:
    facts = reader.read(scope(headers))
    assert facts.credential is None
    refused(facts.problem)


def test_fact_reader_reads_the_client_even_when_the_credential_is_bad(reader: FactReader) -> None:
    facts = reader.read(scope([(b"authorization", b"Basic x")], client=("192.0.2.99", 1)))
    assert facts.client is not None and facts.client.text == "192.0.2.99"
    refused(facts.problem)


def test_fact_reader_with_no_client_and_no_method(reader: FactReader) -> None:
    s = scope([bearer(JWT)], client=None)
    del s["method"]
    facts = reader.read(s)
    assert facts.client is None
    assert facts.method == "GET"
    assert facts.credential == Credential(CredentialKind.JWT, JWT, "authorization")

"""Hypothesis strategies for what an attacker controls: header names and values, request
targets, credentials (keys, near-keys, JWT-like strings), client addresses and forwarding
chains, and request bodies."""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

from hypothesis import strategies as st

from gatekeeper.keys import ALPHABET, ID_LEN, SECRET_LEN, build_key
from tests.fuzz.harness import JWT_ISSUER, JWT_SECRET

CREDENTIAL_HEADERS = [b"authorization", b"api-key", b"x-api-key", b"x_api_key", b"api_key",
                      b"Authorization", b"AUTHORIZATION", b"x-api-key "]
OTHER_HEADERS = [b"x-forwarded-for", b"forwarded", b"x_forwarded_for", b"x-tenant-id",
                 b"x_tenant_id", b"cf-ipcountry", b"cf_ipcountry", b"content-type",
                 b"content-length", b"transfer-encoding", b"host", b"user-agent", b"x-real-ip",
                 b"", b"\x00", b":authority"]
TENANTS = ["acme", "metered", "tokens", "travellers", "initech", "globex", "ACME", "acme ",
           "", "acme,metered", "../acme", "\u0430cme"]
SCHEMES = [b"Bearer ", b"bearer ", b"BEARER ", b"Bearer  ", b"Bearer\t", b"Basic ", b"Token ",
           b"", b"Bearer", b" Bearer "]

# bytes that break parsers: separators, quotes, controls, non-UTF-8, look-alikes
NASTY = st.sampled_from([b"", b" ", b",", b";", b"=", b'"', b"\\", b"\x00", b"\r\n", b"\t",
                         b"\xff", b"\xc3\x28", b"\xed\xa0\x80", "\u202e".encode(), b"%00",
                         b"%2F", b"..", b"/", b"[", b"]", b":", b"unknown", b"_hidden"])


def huge(piece: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A value repeated up to 200 kB: cheap to generate, expensive to parse carelessly."""
    return st.builds(lambda p, n: (p or b"x") * n, piece, st.integers(1, 200_000))


def text_bytes(max_size: int = 40) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=max_size),
                     st.text(max_size=max_size).map(lambda t: t.encode("utf-8", "surrogatepass")),
                     st.lists(NASTY, max_size=8).map(b"".join))


# --- addresses --------------------------------------------------------------------------------

IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(str)
INTERESTING_IPS = st.sampled_from([
    "192.0.2.10", "192.0.2.200", "10.1.2.3", "10.0.0.1", "203.0.113.7", "198.51.100.1",
    "127.0.0.1", "::1", "2001:db8::5", "2001:db8:f::1", "::ffff:10.1.2.3", "::ffff:192.0.2.10",
    "0.0.0.0", "255.255.255.255", "fe80::1%eth0", "10.1.2.3%eth0", "010.001.002.003",
    "1.2.3", "0x7f.1", "2130706433", "not an ip", "", " 10.1.2.3", "10.1.2.3 ", "[::1]",
    "8.8.8.8", "81.2.69.160", "2a02:26f0::1", "unix:/tmp/socket"])
ADDRESS = st.one_of(INTERESTING_IPS, IPV4, IPV6)
GOOD_PEER = st.sampled_from([("192.0.2.10", 40000), ("10.1.2.3", 443), ("2001:db8::5", 1),
                             ("2001:db8:f::9", 8443)])
PEER: st.SearchStrategy[Any] = st.one_of(
    GOOD_PEER, GOOD_PEER, st.none(), st.tuples(ADDRESS, st.integers(0, 65535)),
    st.tuples(st.sampled_from(["10.1.2.3", "2001:db8:f::9"]), st.integers(0, 65535)))
"""Servers send (host, port) or None; a trusted proxy's peer makes forwarding headers count."""


def _hop(address: str, port: int | None, bracket: bool) -> str:
    host = f"[{address}]" if bracket else address
    return f"{host}:{port}" if port is not None else host


HOP = st.one_of(
    st.builds(_hop, ADDRESS, st.none() | st.integers(0, 99999), st.booleans()),
    st.text(max_size=20))
XFF = st.one_of(
    st.lists(HOP, max_size=6).flatmap(
        lambda hops: st.sampled_from([",", ", ", " ,", ",,"]).map(lambda s: s.join(hops))
    ).map(lambda t: t.encode("utf-8", "surrogatepass")),
    text_bytes(), huge(st.sampled_from([b"10.1.2.3,", b"1.1.1.1, ", b",", b"unknown,"])))


def _element(pairs: list[tuple[str, str]], quoted: bool) -> str:
    return ";".join(f'{k}="{v}"' if quoted else f"{k}={v}" for k, v in pairs)


FORWARDED = st.one_of(
    st.lists(st.lists(st.tuples(st.sampled_from(["for", "For", "by", "proto", "host", "x", ""]),
                                HOP), max_size=3).flatmap(
        lambda pairs: st.booleans().map(lambda q: _element(pairs, q))),
        max_size=4).map(lambda els: ", ".join(els).encode("utf-8", "surrogatepass")),
    text_bytes(), huge(st.sampled_from([b"for=10.1.2.3,", b'for="[::1]";', b";"])))


# --- credentials ------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt_like(header: Any, payload: Any, signature: bytes, raw: bool) -> str:
    def part(value: Any) -> str:
        return _b64(value if isinstance(value, bytes) else
                    json.dumps(value, default=str).encode())
    text = f"{part(header)}.{part(payload)}.{_b64(signature)}"
    return text if not raw else text.replace(".", "", 1)


def _signed(claims: dict[str, Any]) -> str:
    """HS256 over any claims, signed by hand: PyJWT's encode refuses some that a forger sends."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(
        json.dumps(claims).encode())
    return f"{head}.{_b64(hmac.digest(JWT_SECRET.encode(), head.encode(), 'sha256'))}"


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                      st.floats(allow_nan=False), st.text(max_size=20))
CLAIMS = st.fixed_dictionaries({}, optional={
    "iss": st.sampled_from([JWT_ISSUER, "https://evil.test/", ""]) | JSON_LEAF,
    "aud": st.sampled_from(["gatekeeper", ["gatekeeper", "x"], "other"]) | JSON_LEAF,
    "sub": JSON_LEAF, "tenant": st.sampled_from(TENANTS) | JSON_LEAF,
    "exp": st.integers(-(10**20), 10**20) | JSON_LEAF, "nbf": JSON_LEAF, "iat": JSON_LEAF})
JWT_HEADER = st.fixed_dictionaries({}, optional={
    "alg": st.sampled_from(["none", "None", "HS256", "RS256", "ES256", "HS512", ""]) | JSON_LEAF,
    "typ": JSON_LEAF, "kid": JSON_LEAF, "jku": st.just("https://evil.test/jwks"),
    "crit": st.lists(st.text(max_size=5), max_size=2)})
JWT_LIKE = st.one_of(
    st.builds(_jwt_like, JWT_HEADER | st.binary(max_size=20), CLAIMS | st.binary(max_size=20),
              st.binary(max_size=64), st.booleans()),
    # correctly signed, with fuzzed claims: reaches claim checks past the signature
    st.builds(_signed, CLAIMS))
BASE62 = st.text(alphabet=ALPHABET, min_size=ID_LEN, max_size=ID_LEN)


def near_key(key: str, data: st.DataObject) -> str:
    """One real key, damaged the ways a typo, a scraper or a forger damages it."""
    i = data.draw(st.integers(0, len(key) - 1))
    how = data.draw(st.sampled_from(["replace", "cut", "extend", "case", "insert", "prefix",
                                     "as-is", "whitespace", "twice"]))
    if how == "replace":
        return key[:i] + data.draw(st.characters()) + key[i + 1:]
    if how == "cut":
        return key[:i]
    if how == "extend":
        return key + data.draw(st.text(max_size=5))
    if how == "case":
        return key.swapcase()
    if how == "insert":
        return key[:i] + data.draw(st.sampled_from(["\x00", " ", "\u200b", "=", "%"])) + key[i:]
    if how == "prefix":
        return data.draw(st.sampled_from(["GK_", "gk-", "gk", "sk-", "gk_gk_"])) + key[3:]
    if how == "whitespace":
        return f" {key}\t"
    if how == "twice":
        return key + "," + key
    return key


def credential(keys: dict[str, str], data: st.DataObject) -> bytes:
    """A credential header value: scheme, then a real key, a near-key, a forged well-formed
    key, a JWT-like string or noise."""
    kind = data.draw(st.sampled_from(["key", "key", "key", "near", "forged", "jwt", "jwt",
                                      "noise", "huge"]))
    if kind in ("key", "near"):
        key = keys[data.draw(st.sampled_from(sorted(keys)))]
        token = key if kind == "key" else near_key(key, data)
    elif kind == "forged":  # a valid checksum over an id and secret nobody issued
        token = build_key(data.draw(BASE62), data.draw(
            st.text(alphabet=ALPHABET, min_size=SECRET_LEN, max_size=SECRET_LEN)))
    elif kind == "jwt":
        token = data.draw(JWT_LIKE)
    elif kind == "huge":
        return data.draw(huge(st.sampled_from([b"Bearer ", b"gk_", b"eyJ", b"."])))
    else:
        return data.draw(text_bytes())
    scheme = data.draw(st.sampled_from([b"Bearer "] * 6 + SCHEMES))
    return scheme + token.encode("utf-8", "surrogatepass")


# --- targets ----------------------------------------------------------------------------------

PROTECTED = st.sampled_from(["/v1/chat/completions", "/v1/models", "/v1/embeddings",
                             "/t/acme/v1/models", "/v1"])
TARGET = st.one_of(
    PROTECTED, PROTECTED, PROTECTED, PROTECTED, PROTECTED,
    st.sampled_from(["/v1/chat/completions", "/v1/models", "/v1", "/v1/", "/healthz",
                     "/healthz/../v1/models", "//v1/models", "/v1/%2e%2e/healthz",
                     "/V1/models", "/v1/./models", "/v1%2fmodels", "/t/acme/v1/models",
                     "http://api.test/v1/models", "https://x/healthz", "v1/models", "*",
                     "api.test:443", "", "/", "/v1/\u00e9", "/v1/\x00", "/healthz\n/v1",
                     "/v1/" + "a/" * 2000]),
    st.lists(st.sampled_from(["", "v1", "healthz", "models", "..", ".", "%2e", "%2F", "t",
                              "acme", "\u00e9", ";x", "?q", "#f", "*", "\\", " "]),
             max_size=6).map(lambda parts: "/" + "/".join(parts)),
    st.text(max_size=30))
ROOT_PATH = st.sampled_from([""] * 8 + ["/api", "/v1", "/api/"])
METHOD = st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "CONNECT", "DELETE", "get", "",
                          "PROPFIND"])


# --- bodies -----------------------------------------------------------------------------------

NUMBER_TEXT = st.sampled_from([
    "1", "0", "-1", "4096", "4097", "1e999", "-1e999", "1.5", "1e2", "10" + "0" * 400,
    "1" + "0" * 5000, "-0", "9" * 30, "NaN", "Infinity", "-Infinity", "true", "null", '"12"',
    "[]", "{}", "0x10", "01", "1_000"])
MESSAGE = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(["user", "system", "assistant", "tool"]) | JSON_LEAF,
    "content": st.text(max_size=50) | JSON_LEAF | st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]),
                               "text": st.text(max_size=20) | JSON_LEAF}), max_size=3),
    "name": JSON_LEAF})
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["gpt-4o-mini", "gpt-4o", "gpt-4o-mini-2024", "text-embedding-3-s",
                              "", "GPT-4O-MINI", "gpt-4o-mini\x00"]) | JSON_LEAF,
    "messages": st.lists(MESSAGE, max_size=4) | JSON_LEAF,
    "input": st.text(max_size=40) | st.lists(st.text(max_size=10), max_size=4) | JSON_LEAF,
    "prompt": st.text(max_size=40) | JSON_LEAF,
    "max_tokens": st.integers(-(10**6), 10**6) | JSON_LEAF,
    "max_completion_tokens": st.integers(-5, 10**5) | JSON_LEAF,
    "max_output_tokens": st.integers(-5, 10**5) | JSON_LEAF,
    "n": st.integers(-3, 10) | JSON_LEAF, "best_of": st.integers(-3, 10) | JSON_LEAF,
    "stream": st.booleans() | JSON_LEAF,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": JSON_LEAF}) | JSON_LEAF,
    "logit_bias": st.dictionaries(st.text(max_size=5), st.integers(), max_size=2) | JSON_LEAF,
    "tools": st.lists(JSON_LEAF, max_size=2) | JSON_LEAF,
}
DOCUMENT = st.fixed_dictionaries({}, optional=FIELD_VALUES).map(
    lambda d: json.dumps(d).encode())


def _with_raw_number(field: str, number: str) -> bytes:
    return f'{{"model":"gpt-4o-mini","messages":[],"{field}":{number}}}'.encode()


RAW_BODY = st.one_of(
    st.builds(_with_raw_number, st.sampled_from(["max_tokens", "n", "max_output_tokens",
                                                 "model", "messages"]), NUMBER_TEXT),
    st.builds(lambda n, opener: opener * n, st.integers(1, 200_000),
              st.sampled_from([b"[", b"{\"a\":", b"{\"messages\":[", b"[{}", b"\""])),
    st.sampled_from([b"", b"{", b"}", b"null", b"[]", b"\"x\"", b"{}", b"\xef\xbb\xbf{}",
                     b'{"model":"a","model":"gpt-4o-mini"}', b'{"max_tokens":1,"max_tokens":9e9}',
                     b'{"model":"\\ud800"}', b'{"model":"gpt-4o-mini"}\x00', b"{\"a\":1}{}",
                     b'{"messages":[{"content":"' + b"x" * 70_000 + b'"}]}',
                     b'{"model":"gpt-4o-mini","n":1.0}', b"\xff\xfe{\x00}\x00"]),
    st.binary(max_size=200))


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(body[start:point])
        start = point
    return [*pieces, body[start:]]


def chunks(body: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    """A body as a server delivers it: one message or several, empty ones included."""
    return st.builds(_split, body, st.lists(st.integers(0, 10**6), max_size=3))

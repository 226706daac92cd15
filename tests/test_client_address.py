"""Client address resolution: spoofed forwarding headers never move the client."""

from __future__ import annotations

import random

import pytest

from gatekeeper.client_address import ClientAddressPolicy, resolve_client
from gatekeeper.errors import ConfigError
from gatekeeper.networks import IPAddr, NetworkSet, parse_ip
from gatekeeper.policy.client_address import load_client_address
from gatekeeper.policy.fields import Fields
from gatekeeper.reasons import FORWARDED_MALFORMED, Refusal

PROXIES = NetworkSet.parse(["10.0.0.0/8", "2001:db8:ffff::/48"])
XFF = ClientAddressPolicy(trusted_proxies=PROXIES)
FWD = ClientAddressPolicy(trusted_proxies=PROXIES, header="forwarded")
PROXY = ("10.0.0.1", 443)


def ip(text: str) -> IPAddr:
    addr = parse_ip(text)
    assert addr is not None
    return addr


def text_of(result: IPAddr | Refusal | None) -> str | None:
    assert not isinstance(result, Refusal), result
    return None if result is None else result.text


def assert_malformed(result: IPAddr | Refusal | None) -> Refusal:
    assert isinstance(result, Refusal), result
    assert result.reason is FORWARDED_MALFORMED
    assert result.detail
    return result


# --- spoofing -----------------------------------------------------------------------------

@pytest.mark.parametrize("forwarded", [
    ["192.0.2.10"],
    ["10.0.0.5"],
    ["192.0.2.10, 10.0.0.5"],
    ["garbage"],
    ["unknown"],
    ["", ""],
    ["for=192.0.2.10"],
    ["x" * 100_000],
])
@pytest.mark.parametrize("policy", [ClientAddressPolicy(), XFF, FWD,
                                    ClientAddressPolicy(header="forwarded")])
def test_untrusted_peer_is_the_client_whatever_the_header_says(
        forwarded: list[str], policy: ClientAddressPolicy) -> None:
    assert text_of(resolve_client(("203.0.113.7", 5555), forwarded, policy)) == "203.0.113.7"


@pytest.mark.parametrize("forwarded", [
    None, [], ["192.0.2.10"], ["garbage"], ["for=192.0.2.10"], ['for="[2001:db8::1]"'],
])
@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
def test_default_policy_trusts_no_proxy(forwarded: list[str] | None, header: str) -> None:
    # Even a peer inside private space is not a proxy until configured as one.
    policy = ClientAddressPolicy(header=header)
    assert text_of(resolve_client(("10.0.0.1", 1), forwarded, policy)) == "10.0.0.1"


def test_spoofed_hop_left_of_the_real_client_is_ignored() -> None:
    # The client claims an allowed address; the proxy appends the real one.
    result = resolve_client(PROXY, ["10.1.2.3, 198.51.100.9"], XFF)
    assert text_of(result) == "198.51.100.9"


def test_client_claiming_a_trusted_address_does_not_skip_the_proxy_hop() -> None:
    # A client sending a trusted-looking hop is still found at its real position.
    result = resolve_client(PROXY, ["192.0.2.66, 10.9.9.9, 198.51.100.9"], XFF)
    assert text_of(result) == "198.51.100.9"


# --- trusted chains -----------------------------------------------------------------------

@pytest.mark.parametrize(("forwarded", "client"), [
    (["192.0.2.60"], "192.0.2.60"),
    (["192.0.2.60, 10.0.0.2"], "192.0.2.60"),
    (["192.0.2.60,10.0.0.2,10.0.0.3"], "192.0.2.60"),
    (["198.51.100.1, 192.0.2.60, 10.0.0.2"], "192.0.2.60"),
    (["10.0.0.9"], "10.0.0.9"),
    (["10.0.0.9, 10.0.0.8"], "10.0.0.9"),
    (["192.0.2.60:4711"], "192.0.2.60"),
    (["  192.0.2.60\t"], "192.0.2.60"),
    (["2001:db8:cafe::17"], "2001:db8:cafe::17"),
    (["[2001:db8:cafe::17]"], "2001:db8:cafe::17"),
    (["[2001:db8:cafe::17]:4711"], "2001:db8:cafe::17"),
    (["2001:DB8:CAFE:0:0:0:0:17"], "2001:db8:cafe::17"),
    (["::ffff:192.0.2.60"], "192.0.2.60"),
    (["[::ffff:192.0.2.60]:80"], "192.0.2.60"),
    (["192.0.2.60, 2001:db8:ffff::1"], "192.0.2.60"),
    (["192.0.2.60", "10.0.0.2"], "192.0.2.60"),
    (["198.51.100.1, 192.0.2.60", "10.0.0.2, 10.0.0.3"], "192.0.2.60"),
    (["198.51.100.1", "192.0.2.60"], "192.0.2.60"),
])
def test_trusted_xff_chain(forwarded: list[str], client: str) -> None:
    assert text_of(resolve_client(PROXY, forwarded, XFF)) == client


@pytest.mark.parametrize(("forwarded", "client"), [
    (["for=192.0.2.60"], "192.0.2.60"),
    (["For=192.0.2.60;proto=https;by=203.0.113.43"], "192.0.2.60"),
    (["proto=https; FOR=192.0.2.60 ;by=10.0.0.1"], "192.0.2.60"),
    (['for="192.0.2.60"'], "192.0.2.60"),
    (['for="192.0.2.60:4711"'], "192.0.2.60"),
    (['for="[2001:db8:cafe::17]:4711"'], "2001:db8:cafe::17"),
    (['for="[2001:db8:cafe::17]"'], "2001:db8:cafe::17"),
    (['for="[2001:db8:cafe::17]:_abc"'], "2001:db8:cafe::17"),
    (["for=192.0.2.43, for=198.51.100.17"], "198.51.100.17"),
    (["for=192.0.2.43, for=10.0.0.7"], "192.0.2.43"),
    (["for=10.0.0.8, for=10.0.0.7"], "10.0.0.8"),
    (["for=192.0.2.43", "for=10.0.0.7;proto=http"], "192.0.2.43"),
    (["garbage;;, for=198.51.100.17"], "198.51.100.17"),
])
def test_trusted_forwarded_chain(forwarded: list[str], client: str) -> None:
    assert text_of(resolve_client(PROXY, forwarded, FWD)) == client


@pytest.mark.parametrize("peer", [
    ("::ffff:10.0.0.1", 80), ["::ffff:10.0.0.1", 80], ("2001:db8:ffff::5", 80),
])
def test_trusted_peer_forms(peer: object) -> None:
    assert text_of(resolve_client(peer, ["192.0.2.60"], XFF)) == "192.0.2.60"


@pytest.mark.parametrize("forwarded", [None, [], [""], ["   "], ["", " \t"]])
@pytest.mark.parametrize("policy", [XFF, FWD])
def test_trusted_peer_without_header_is_the_client(
        forwarded: list[str] | None, policy: ClientAddressPolicy) -> None:
    assert text_of(resolve_client(PROXY, forwarded, policy)) == "10.0.0.1"


def test_result_is_the_parsed_address() -> None:
    assert resolve_client(PROXY, ["192.0.2.60:1"], XFF) == ip("192.0.2.60")


# --- malformed ----------------------------------------------------------------------------

@pytest.mark.parametrize("forwarded", [
    ["garbage"],
    ["192.0.2.60, garbage"],
    ["192.0.2.60, 10.0.0.2, garbage"],
    ["unknown"],
    ["192.0.2.60, unknown"],
    ["_hidden"],
    [", 10.0.0.2"],
    ["192.0.2.60,"],
    ["192.0.2.60, , 10.0.0.2"],
    ["192.0.2.60", ""],
    ["192.0.2.60:"],
    ["192.0.2.60:99999"],
    ["192.0.2.60:http"],
    ["192.0.2.60:_obf"],
    ["[192.0.2.60]"],
    ["[2001:db8::1"],
    ["[2001:db8::1]x"],
    ["192.0.2.256"],
    ["0192.0.2.1"],
    ["192.0.2"],
    ["1" * 2000],
    ["192.0.2.60" + " " * 5000],
])
def test_unparseable_reached_xff_hop_is_refused(forwarded: list[str]) -> None:
    assert_malformed(resolve_client(PROXY, forwarded, XFF))


@pytest.mark.parametrize("forwarded", [
    ["for=unknown"],
    ["for=_hidden"],
    ['for="_gazonk"'],
    ["proto=https"],
    ["192.0.2.60"],
    [" ; "],
    ["for=192.0.2.43, "],
    ["for=192.0.2.60;for=198.51.100.1"],
    ['for="192.0.2.60'],
    ['for="'],
    ["for=2001:db8::1]"],
    ["for="],
    ["for=192.0.2.43, by=10.0.0.1"],
])
def test_unparseable_reached_forwarded_element_is_refused(forwarded: list[str]) -> None:
    assert_malformed(resolve_client(PROXY, forwarded, FWD))


@pytest.mark.parametrize("junk", [
    "garbage", "unknown", "", "  ", "_hidden", '"', "[", "::::", "\x00\xff", "x" * 10_000,
])
@pytest.mark.parametrize("policy", [XFF, FWD])
def test_junk_left_of_the_client_is_never_parsed(junk: str, policy: ClientAddressPolicy) -> None:
    hop = "for=198.51.100.9" if policy is FWD else "198.51.100.9"
    proxy_hop = "for=10.0.0.2" if policy is FWD else "10.0.0.2"
    result = resolve_client(PROXY, [f"{junk}, {hop}, {proxy_hop}"], policy)
    assert text_of(result) == "198.51.100.9"


def test_unclosed_quote_on_the_left_does_not_swallow_the_proxy_hop() -> None:
    result = resolve_client(PROXY, ['for="192.0.2.1, for=198.51.100.9'], FWD)
    assert text_of(result) == "198.51.100.9"


def test_refusal_detail_names_the_hop_and_stays_short() -> None:
    refusal = assert_malformed(resolve_client(PROXY, ["192.0.2.1, " + "z" * 500], XFF))
    assert "hop 1" in refusal.detail
    assert len(refusal.detail) < 200


@pytest.mark.parametrize(("max_hops", "trusted_hops", "refused"), [
    (1, 0, False),
    (1, 1, True),
    (3, 2, False),
    (3, 3, True),
    (20, 19, False),
    (20, 20, True),
    (20, 500, True),
])
def test_max_hops(max_hops: int, trusted_hops: int, refused: bool) -> None:
    policy = ClientAddressPolicy(trusted_proxies=PROXIES, max_hops=max_hops)
    header = ", ".join(["192.0.2.60"] + ["10.0.0.2"] * trusted_hops)
    result = resolve_client(PROXY, [header], policy)
    if refused:
        assert assert_malformed(result).detail == "too many hops"
    else:
        assert text_of(result) == "192.0.2.60"


def test_all_trusted_chain_at_exactly_max_hops_is_the_leftmost() -> None:
    policy = ClientAddressPolicy(trusted_proxies=PROXIES, max_hops=3)
    assert text_of(resolve_client(PROXY, ["10.0.0.3, 10.0.0.2, 10.0.0.1"], policy)) == "10.0.0.3"
    assert_malformed(resolve_client(PROXY, ["10.0.0.4, 10.0.0.3, 10.0.0.2, 10.0.0.1"], policy))


@pytest.mark.parametrize("peer", [
    None, "testclient", "", ("testclient", 123), ("", 0), ("192.0.2.1",), (), [],
    ("192.0.2.1", 80, "extra"), (None, 80), (b"192.0.2.1", 80), (19202, 80), {"host": "x"},
    ("[2001:db8::1]", 80), ("192.0.2.1:80", 80), ("x" * 10_000, 1), 42, object(),
])
@pytest.mark.parametrize("policy", [ClientAddressPolicy(), XFF, FWD])
def test_unknown_peer_is_none_and_headers_are_ignored(
        peer: object, policy: ClientAddressPolicy) -> None:
    assert resolve_client(peer, ["192.0.2.60"], policy) is None


# --- fuzz -----------------------------------------------------------------------------------

_ALPHABET = "0123456789abcdefABCDEF.:[]\",;= _-%\t\x00\xff/unkowfrFORby"


def _random_text(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return "".join(chr(rng.randrange(256)) for _ in range(rng.randrange(200)))
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(60)))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_fuzz_never_raises(seed: int) -> None:
    rng = random.Random(seed)
    policies = [ClientAddressPolicy(), XFF, FWD,
                ClientAddressPolicy(trusted_proxies=NetworkSet.parse(["::/1", "128.0.0.0/1"]),
                                    max_hops=5)]
    kinds = {IPAddr: 0, Refusal: 0, type(None): 0}
    for _ in range(500):
        values = [_random_text(rng) for _ in range(rng.randrange(4))]
        host = rng.choice(["10.0.0.1", "2001:db8:ffff::1", _random_text(rng)])
        peer = rng.choice([(host, 1), [host, 2], host, None])
        policy = rng.choice(policies)
        result = resolve_client(peer, values or None, policy)
        assert type(result) in kinds
        kinds[type(result)] += 1
    assert kinds[Refusal] > 0
    assert kinds[IPAddr] > 0
    assert kinds[type(None)] > 0


# --- loading ---------------------------------------------------------------------------------

def load(data: object) -> tuple[ClientAddressPolicy, list[str]]:
    errors: list[ConfigError] = []
    policy = load_client_address(Fields(data, "client_address", errors))
    return policy, [str(e) for e in errors]


def test_load_valid_section() -> None:
    policy, errors = load({"trusted_proxies": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"],
                           "header": "forwarded", "max_hops": 5})
    assert errors == []
    assert policy.trusted_proxies == NetworkSet.parse(["10.0.0.0/8", "2001:db8::/32",
                                                      "192.0.2.1/32"])
    assert policy.header == "forwarded"
    assert policy.max_hops == 5


@pytest.mark.parametrize("data", [None, {}])
def test_load_defaults_trust_nobody(data: object) -> None:
    policy, errors = load(data)
    assert errors == []
    assert policy == ClientAddressPolicy()
    assert not policy.trusted_proxies


@pytest.mark.parametrize(("data", "expected"), [
    ({"trusted_proxies": ["10.0.0.0/8", "10.0.0/8"]},
     'client_address.trusted_proxies[1]: "10.0.0/8" is not a network'),
    ({"trusted_proxies": ["10.0.0.1/8"]},
     'client_address.trusted_proxies[0]: "10.0.0.1/8" is not a network'),
    ({"trusted_proxies": [7]}, "client_address.trusted_proxies[0]: 7 must be a string"),
    ({"trusted_proxies": ["0.0.0.0/0"]},
     'client_address.trusted_proxies[0]: "0.0.0.0/0" trusts too many addresses'),
    ({"header": "X-Real-IP"},
     'client_address.header: "X-Real-IP" must be one of x-forwarded-for, forwarded'),
    ({"max_hops": 0}, "client_address.max_hops: 0 must be between 1 and 100"),
    ({"max_hops": 101}, "client_address.max_hops: 101 must be between 1 and 100"),
    ({"max_hops": "5"}, 'client_address.max_hops: "5" must be an integer'),
    ({"max_hops": True}, "client_address.max_hops: true must be an integer"),
    ({"trusted_proxy": ["10.0.0.0/8"]},
     "client_address.trusted_proxy: is not a known field (did you mean trusted_proxies?)"),
    ("10.0.0.0/8", 'client_address: "10.0.0.0/8" must be a mapping'),
])
def test_load_errors_name_the_field(data: object, expected: str) -> None:
    policy, errors = load(data)
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected)
    assert isinstance(policy, ClientAddressPolicy)


def test_load_keeps_the_good_networks_when_one_is_bad() -> None:
    policy, errors = load({"trusted_proxies": ["10.0.0.0/8", "nope"], "max_hops": 0})
    assert len(errors) == 2
    assert policy.trusted_proxies == NetworkSet.parse(["10.0.0.0/8"])
    assert policy.max_hops == 20

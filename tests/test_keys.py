"""API key format: leak-scannable, checksummed so typos fail before any store lookup, and the
secret never leaves the one string handed to the caller."""

from __future__ import annotations

import json
import re
import zlib

import pytest

from gatekeeper import KEY_PATTERN, KeyRecord, build_key, hash_secret, new_key, parse_key
from gatekeeper.keys import (
    ALPHABET,
    CRC_LEN,
    ID_LEN,
    KEY_LEN,
    PREFIX,
    SECRET_LEN,
    looks_like_key_id,
)
from gatekeeper.principal import KeyStatus

PEPPER = b"p" * 40
KEY_ID = "AbCdEf012345"
SECRET = "0123456789abcdefghijABCDEFGHIJkl"
FIXED_KEY = build_key(KEY_ID, SECRET)
NOW = 1_700_000_000.0


def b62(n: int, width: int) -> str:
    digits = []
    for _ in range(width):
        n, d = divmod(n, 62)
        digits.append(ALPHABET[d])
    assert n == 0
    return "".join(reversed(digits))


def sample_keys() -> list[str]:
    """Fixed keys (reproducible) plus freshly issued ones."""
    keys = [FIXED_KEY, build_key("0" * ID_LEN, "0" * SECRET_LEN),
            build_key("z" * ID_LEN, "z" * SECRET_LEN)]
    keys += [new_key(PEPPER, "acme", NOW)[0] for _ in range(3)]
    return keys


# --- format ---------------------------------------------------------------------------------

def test_layout_is_prefix_id_secret_and_base62_crc32() -> None:
    assert len(FIXED_KEY) == KEY_LEN == 53
    assert FIXED_KEY.startswith("gk_")
    assert FIXED_KEY[3:15] == KEY_ID
    assert FIXED_KEY[15:47] == SECRET
    checksum = FIXED_KEY[47:]
    assert len(checksum) == CRC_LEN
    # an independent base62 rendering of CRC32 over the prefix, id and secret
    assert checksum == b62(zlib.crc32(("gk_" + KEY_ID + SECRET).encode()), CRC_LEN)


def test_issued_keys_have_the_documented_shape() -> None:
    for _ in range(50):
        key, record = new_key(PEPPER, "acme", NOW)
        assert re.fullmatch(r"gk_[0-9A-Za-z]{50}", key), key
        assert key[3:15] == record.key_id
        assert looks_like_key_id(record.key_id)


def test_checksum_of_extreme_crc_values_stays_six_base62_digits() -> None:
    assert 62**CRC_LEN > 2**32  # the largest CRC fits in six digits
    for id_, secret in [("0" * 12, "0" * 32), ("Z" * 12, "9" * 32), (KEY_ID, SECRET[::-1])]:
        key = build_key(id_, secret)
        assert key[47:] == b62(zlib.crc32(key[:47].encode()), 6)


# --- KEY_PATTERN: what secret scanners register -----------------------------------------------

def test_key_pattern_matches_every_issued_key() -> None:
    pattern = re.compile(KEY_PATTERN)
    for key in sample_keys():
        assert pattern.fullmatch(key), key


def test_key_pattern_finds_a_key_embedded_in_prose() -> None:
    key = new_key(PEPPER, "acme", NOW)[0]
    other = new_key(PEPPER, "globex", NOW)[0]
    paragraph = (
        "Hi team,\nI pushed the config by mistake. It had OPENAI_API_KEY="
        f"{key} in it, and the staging one was \"{other}\".\n"
        f"Also see https://example.test/run?api_key={key}&x=1 (sorry!)\n"
        f'{{"key": "{other}"}}\n'
        "A near miss that is no key: gk_tooShort123 and gk_" + "a" * 51 + " and x" + key + "\n"
    )
    found = re.findall(KEY_PATTERN, paragraph)
    assert found == [key, other, key, other]


def test_key_pattern_ignores_wrong_lengths_and_prefixes() -> None:
    pattern = re.compile(KEY_PATTERN)
    body = FIXED_KEY[3:]
    for text in ("gk_" + body[:-1], "gk_" + body + "a", "GK_" + body, "gk-" + body,
                 "sk_" + body, "gk_" + body[:-1] + "-"):
        assert pattern.search(text) is None, text


# --- parse_key ------------------------------------------------------------------------------

def test_parse_key_round_trips_build_key() -> None:
    assert parse_key(FIXED_KEY) == (KEY_ID, SECRET)
    for _ in range(100):
        key, record = new_key(PEPPER, "acme", NOW)
        parsed = parse_key(key)
        assert parsed is not None
        key_id, secret = parsed
        assert key_id == record.key_id
        assert build_key(key_id, secret) == key
        assert hash_secret(PEPPER, key_id, secret) == record.secret_hash


REPLACEMENTS_OUTSIDE_ALPHABET = "-_. +/=\x00\u00e9\u0663\uff21"  # é, Arabic-Indic 3, fullwidth A


@pytest.mark.parametrize("key", sample_keys())
def test_every_single_character_substitution_is_refused(key: str) -> None:
    """A typo anywhere (prefix, id, secret, checksum) fails before any store lookup."""
    assert parse_key(key) is not None
    accepted = []
    for pos in range(len(key)):
        for ch in ALPHABET + REPLACEMENTS_OUTSIDE_ALPHABET:
            if ch == key[pos]:
                continue
            typo = key[:pos] + ch + key[pos + 1:]
            if parse_key(typo) is not None:
                accepted.append((pos, ch))
    assert accepted == []


@pytest.mark.parametrize("key", sample_keys()[:3])
def test_every_adjacent_transposition_is_refused(key: str) -> None:
    accepted = []
    for pos in range(len(key) - 1):
        if key[pos] == key[pos + 1]:
            continue
        swapped = key[:pos] + key[pos + 1] + key[pos] + key[pos + 2:]
        if parse_key(swapped) is not None:
            accepted.append(pos)
    assert accepted == []


@pytest.mark.parametrize("text", [
    "",
    "gk_",
    "gk",
    FIXED_KEY[:-1],
    FIXED_KEY[:20],
    FIXED_KEY + "a",
    FIXED_KEY + FIXED_KEY,
    " " + FIXED_KEY,
    FIXED_KEY + " ",
    FIXED_KEY + "\n",
    "\t" + FIXED_KEY[1:],
    FIXED_KEY[:-1] + "\n",
    FIXED_KEY.upper(),
    "GK_" + FIXED_KEY[3:],
    "Bearer " + FIXED_KEY,
    FIXED_KEY.replace("gk_", "\uff47\uff4b\uff3f"),  # fullwidth gk_
    FIXED_KEY[:10] + "\u00e9" + FIXED_KEY[11:],
    FIXED_KEY[:10] + "\u0663" + FIXED_KEY[11:],  # a digit to str.isalnum, not to us
    FIXED_KEY[:10] + "\x00" + FIXED_KEY[11:],
    FIXED_KEY[:10] + "\U0001f600" + FIXED_KEY[11:],
    "gk_" + "\u00a0" * 50,
    "x" * 10_000,
    "gk_" + "A" * 50,
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
])
def test_malformed_inputs_return_none_without_raising(text: str) -> None:
    assert parse_key(text) is None


def test_a_valid_checksum_over_a_different_body_is_refused() -> None:
    other = build_key(KEY_ID, SECRET[::-1])
    spliced = FIXED_KEY[:47] + other[47:]
    assert other[47:] != FIXED_KEY[47:]
    assert parse_key(spliced) is None


# --- hash_secret ----------------------------------------------------------------------------

def test_hash_secret_is_deterministic_hmac_sha256() -> None:
    digest = hash_secret(PEPPER, KEY_ID, SECRET)
    assert digest == hash_secret(PEPPER, KEY_ID, SECRET)
    assert isinstance(digest, bytes)
    assert len(digest) == 32
    assert SECRET.encode() not in digest


def test_hash_secret_depends_on_pepper_key_id_and_secret() -> None:
    base = hash_secret(PEPPER, KEY_ID, SECRET)
    variants = {
        "pepper": hash_secret(PEPPER + b"!", KEY_ID, SECRET),
        "pepper_one_bit": hash_secret(b"q" + PEPPER[1:], KEY_ID, SECRET),
        "key_id": hash_secret(PEPPER, KEY_ID[:-1] + "X", SECRET),
        "secret": hash_secret(PEPPER, KEY_ID, SECRET[:-1] + "X"),
        # the id/secret boundary is part of the hash: moving a character across it changes it
        "boundary": hash_secret(PEPPER, KEY_ID + SECRET[0], SECRET[1:]),
    }
    for name, digest in variants.items():
        assert digest != base, name
    assert len(set(variants.values())) == len(variants)


def test_new_key_record_holds_the_peppered_hash_only() -> None:
    key, record = new_key(PEPPER, "acme", NOW)
    parsed = parse_key(key)
    assert parsed is not None
    assert record.secret_hash == hash_secret(PEPPER, *parsed)
    assert record.secret_hash != hash_secret(b"x" * 40, *parsed)


# --- KeyRecord ------------------------------------------------------------------------------

def full_record() -> tuple[str, KeyRecord]:
    key, record = new_key(PEPPER, "acme", NOW, allowed_networks=("192.0.2.0/24", "2001:db8::/32"),
                          expires_at=NOW + 86400.5, labels={"team": "ml", "env": "prod"},
                          rotated_from="OldKeyId0001")
    return key, record


def test_the_secret_never_appears_in_record_views() -> None:
    key, record = full_record()
    parsed = parse_key(key)
    assert parsed is not None
    secret = parsed[1]
    texts = {
        "to_dict": json.dumps(record.to_dict()),
        "public_view": json.dumps(record.public_view()),
        "repr": repr(record),
        "str": str(record),
    }
    for name, text in texts.items():
        assert secret not in text, name
        assert key not in text, name
    # the hash is stored (to_dict feeds the store) but neither shown nor repr'd
    assert record.to_dict()["secret_hash"] == record.secret_hash.hex()
    assert "secret_hash" not in record.public_view()
    assert record.secret_hash.hex() not in texts["public_view"]
    assert record.secret_hash.hex() not in texts["repr"]
    assert "secret_hash" not in texts["repr"]
    assert record.key_id in texts["repr"]


def test_record_round_trips_through_dict_and_json() -> None:
    _, record = full_record()
    assert KeyRecord.from_dict(record.to_dict()) == record
    assert KeyRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    changed = record.with_changes(status=KeyStatus.SUSPENDED, expires_at=None, updated_at=NOW + 1,
                                  version=3)
    again = KeyRecord.from_dict(json.loads(json.dumps(changed.to_dict())))
    assert again == changed
    assert again.status is KeyStatus.SUSPENDED
    assert again.expires_at is None
    assert again.version == 3
    assert again != record


def test_record_from_minimal_dict_takes_defaults() -> None:
    record = KeyRecord.from_dict({"key_id": KEY_ID, "tenant": "acme", "secret_hash": "00ff"})
    assert record.status is KeyStatus.ACTIVE
    assert record.secret_hash == b"\x00\xff"
    assert record.allowed_networks == ()
    assert record.expires_at is None
    assert dict(record.labels) == {}
    assert record.rotated_from is None
    assert record.version == 0  # records written before versions existed


def test_public_view_has_every_field_but_the_hash() -> None:
    _, record = full_record()
    view = record.public_view()
    assert set(view) == set(record.to_dict()) - {"secret_hash"}
    assert view["allowed_networks"] == ["192.0.2.0/24", "2001:db8::/32"]
    assert view["labels"] == {"team": "ml", "env": "prod"}
    assert view["status"] == "active"


# --- new_key --------------------------------------------------------------------------------

def test_new_key_ids_and_secrets_are_distinct_across_many_calls() -> None:
    n = 3000
    issued = [new_key(PEPPER, "acme", NOW) for _ in range(n)]
    keys = {k for k, _ in issued}
    parsed = [parse_key(k) for k in keys]
    assert all(p is not None for p in parsed)
    ids = {p[0] for p in parsed if p is not None}
    secrets_ = {p[1] for p in parsed if p is not None}
    hashes = {r.secret_hash for _, r in issued}
    assert len(keys) == len(ids) == len(secrets_) == len(hashes) == n
    # every alphabet character turns up: the randomness spans the whole base62 alphabet
    assert set("".join(secrets_)) == set(ALPHABET)


def test_new_key_record_fields() -> None:
    key, record = full_record()
    assert record.tenant == "acme"
    assert record.status is KeyStatus.ACTIVE
    assert record.created_at == record.updated_at == NOW
    assert record.expires_at == NOW + 86400.5
    assert record.allowed_networks == ("192.0.2.0/24", "2001:db8::/32")
    assert record.rotated_from == "OldKeyId0001"
    assert key.startswith(PREFIX + record.key_id)


def test_countries_round_trip_and_older_records_read_as_unbound() -> None:
    from gatekeeper.keys import principal_for

    _, record = new_key(PEPPER, "acme", 1.0, countries=("DE", "FR"))
    again = KeyRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again.countries == ("DE", "FR") and again == record
    rule = principal_for(record).countries
    assert rule is not None and rule.allow == frozenset({"DE", "FR"}) and rule.unknown == "deny"
    old = record.to_dict()
    del old["countries"]  # written before the field existed
    assert KeyRecord.from_dict(old).countries == ()
    assert principal_for(KeyRecord.from_dict(old)).countries is None

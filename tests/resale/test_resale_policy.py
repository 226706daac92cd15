"""The ``resale`` policy section: defaults, per-tenant overrides, field-named errors."""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper import PolicyError, compile_policy
from gatekeeper.networks import parse_ip
from gatekeeper.policy.resale import ENFORCE, OFF, SHADOW


def _errors(data: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as caught:
        compile_policy(data)
    return str(caught.value)


def test_no_section_is_off_and_a_section_defaults_to_shadow() -> None:
    assert compile_policy({"tenants": {"a": {}}}).resale_for("a").mode == OFF
    policy = compile_policy({"resale": {}, "tenants": {"a": {}}})
    assert policy.resale_for("a").mode == SHADOW
    assert policy.resale_for(None).thresholds == (50.0, 80.0, None, 120.0)


def test_a_tenant_overrides_field_by_field() -> None:
    policy = compile_policy({
        "resale": {"mode": "shadow", "windows": {"short": 300},
                   "signals": {"networks": {"allow": 8}}, "max_keys": 1000},
        "tenants": {"acme": {"resale": {
            "mode": "enforce", "thresholds": {"block": 100, "suspend": None},
            "signals": {"networks": {"weight": 2}},
            "known": {"networks": ["203.0.113.0/24", "AS64500"], "countries": ["de"],
                      "nat_egress": ["192.0.2.10/32"]}}},
                    "globex": {}}})
    acme, globex = policy.resale_for("acme"), policy.resale_for("globex")
    assert (acme.mode, acme.short_window, acme.max_keys) == (ENFORCE, 300, 1000)
    assert acme.thresholds == (50.0, 80.0, 100.0, None)
    assert (acme.signals["networks"].allow, acme.signals["networks"].weight) == (8, 2)
    assert acme.known.asns == {64500} and acme.known.countries == {"DE"}
    assert parse_ip("203.0.113.7") in acme.known.networks[0][1]
    assert parse_ip("192.0.2.10") in acme.known.nat_egress
    assert globex.mode == SHADOW and globex.signals["networks"].weight == 5


def test_errors_name_their_fields() -> None:
    text = _errors({"resale": {
        "mode": "loud", "windows": {"short": 90000, "long": 3600},
        "thresholds": {"flag": 90, "throttle": 60}, "signals": {"nets": {}, "models": {
            "weight": -1}}, "known": {"networks": ["not-a-net"], "countries": ["UK"]},
        "max_keys": 0, "surprise": 1},
        "tenants": {"a": {"resale": {"max_keys": 5}}}})
    for expected in ("resale.mode", "resale.windows.short", "resale.thresholds.throttle",
                     "resale.signals.nets", "resale.signals.models.weight",
                     "resale.known.networks[0]", "resale.known.countries[0]",
                     "resale.max_keys", "resale.surprise", "tenants.a.resale.max_keys"):
        assert expected in text, (expected, text)
    assert "did you mean GB" in text


def test_tenants_with_resale_settings_stay_hashable() -> None:
    policy = compile_policy({"resale": {"signals": {"models": {"cap": 10}}},
                             "tenants": {"a": {"resale": {"mode": "enforce"}}}})
    assert hash(policy.tenants["a"]) == hash(policy.tenants["a"])
    assert policy.resale_for("a").signals["models"].cap == 10


def test_throttle_factor_and_flag_header() -> None:
    policy = compile_policy({"resale": {"throttle_factor": 2.5, "flag_header": True},
                             "tenants": {"a": {"resale": {"throttle_factor": 0.5}}, "b": {}}})
    assert policy.resale_for("a").throttle_factor == 0.5
    assert policy.resale_for("b").throttle_factor == 2.5 and policy.resale.flag_header
    text = _errors({"resale": {"throttle_factor": 0, "flag_header": "yes please"},
                    "tenants": {"a": {"resale": {"flag_header": True}}}})
    for expected in ("resale.throttle_factor", "resale.flag_header",
                     "tenants.a.resale.flag_header"):
        assert expected in text, (expected, text)

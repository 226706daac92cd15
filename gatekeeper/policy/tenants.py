"""The ``tenants`` section: every tenant by name, its networks, countries and travel rule,
whether it is disabled, its limits (``policy/limits.py``), its request policy
(``policy/request_policy.py``) and where its owner is notified (``policy/notify.py``)."""

from __future__ import annotations

from collections.abc import Iterator

from gatekeeper.networks import NetworkSet, parse_network
from gatekeeper.policy.fields import Fields
from gatekeeper.policy.geo import load_country_rule, load_travel_rule
from gatekeeper.policy.limits import load_limits
from gatekeeper.policy.model import TENANT_NAME, TenantPolicy
from gatekeeper.policy.notify import load_notify
from gatekeeper.policy.request_policy import load_request_policy
from gatekeeper.policy.resale import RESALE_OFF, SHADOW, ResaleSettings, load_resale


def load_tenants(entries: Iterator[tuple[str, Fields]],
                 resale: ResaleSettings | None = None) -> dict[str, TenantPolicy]:
    """``resale``: the policy's top-level resale settings, which a tenant's section overrides."""
    tenants = {}
    for name, fields in entries:
        if not TENANT_NAME.fullmatch(name):
            fields.error_here(name, "is not a tenant name (letters, digits, '.', '_', '-'; "
                                    "at most 64)")
        nets = fields.str_list("allowed_networks", parse_network, "is not a network")
        disabled = fields.get("disabled", bool, False)
        countries = load_country_rule(fields.section("countries")) \
            if fields.has("countries") else None
        travel = load_travel_rule(fields.section("travel")) if fields.has("travel") else None
        limits = load_limits(fields.section("limits"))
        request = load_request_policy(fields.section("request"))
        own = load_resale(fields.section("resale"), _resale_base(resale), top=False) \
            if fields.has("resale") else None
        notify = load_notify(fields.section("notify")) if fields.has("notify") else None
        fields.finish()
        tenants[name] = TenantPolicy(name, NetworkSet(nets), bool(disabled), countries, limits,
                                     request, travel, own, notify)
    return tenants


def _resale_base(top: ResaleSettings | None) -> ResaleSettings:
    """A tenant's section starts from the top-level one; without one, from shadow defaults."""
    return ResaleSettings(mode=SHADOW) if top is None or top is RESALE_OFF else top

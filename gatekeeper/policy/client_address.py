"""The ``client_address`` section: which proxies may name the client (``trusted_proxies``)."""

from __future__ import annotations

from gatekeeper.client_address import HEADERS, ClientAddressPolicy
from gatekeeper.networks import NetworkSet, parse_network
from gatekeeper.policy.fields import Fields

_MIN_TRUSTED_PREFIX = {4: 8, 6: 7}
"""The widest trusted-proxy networks: 10.0.0.0/8 and fc00::/7 (private ranges) still pass."""
_MIN_PUBLIC_PREFIX = {4: 16, 6: 32}
"""The widest public trusted-proxy networks unless ``allow_wide_public_proxies``: a /16 (IPv6:
a /32, one provider's allocation) is about the largest block one organisation's proxies use;
wider public ranges are shared (a cloud region, a CDN), and anyone renting an address in one
could then write the client address gatekeeper believes."""


def load_client_address(fields: Fields) -> ClientAddressPolicy:
    """Read the section; problems are recorded in ``fields``, never raised."""
    networks = fields.str_list("trusted_proxies", parse_network, "is not a network")
    allow_wide = fields.get("allow_wide_public_proxies", bool, False)
    for i, net in enumerate(networks):
        if net.prefixlen < _MIN_TRUSTED_PREFIX[net.version]:
            # Trusting (nearly) every peer lets a client walk the chain to a hop it wrote itself;
            # a floor per network also stops 0.0.0.0/1 + 128.0.0.0/1 covering everything.
            fields.error(f"trusted_proxies[{i}]", str(net),
                         f"trusts too many addresses (shorter than /"
                         f"{_MIN_TRUSTED_PREFIX[net.version]}), which makes forwarding headers "
                         "spoofable; list your proxies' own networks")
        elif net.is_global and net.prefixlen < _MIN_PUBLIC_PREFIX[net.version] \
                and not allow_wide:
            fields.error(f"trusted_proxies[{i}]", str(net),
                         f"is a public network wider than /{_MIN_PUBLIC_PREFIX[net.version]}, "
                         "shared by machines that are not your proxies; list your proxies' own "
                         "addresses, or set client_address.allow_wide_public_proxies: true "
                         "(e.g. for a CDN's published ranges)")
    header = fields.choice("header", HEADERS, "x-forwarded-for")
    max_hops = fields.get("max_hops", int, 20, "an integer")
    if not 1 <= max_hops <= 100:
        fields.error("max_hops", max_hops, "must be between 1 and 100")
        max_hops = 20
    fields.finish()
    return ClientAddressPolicy(NetworkSet(networks), header, max_hops)

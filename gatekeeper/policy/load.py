"""Policy from YAML or a dict, validated whole: one PolicyError lists every wrong field."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gatekeeper.errors import ConfigError, PolicyError
from gatekeeper.policy.audit import load_audit, stream_url
from gatekeeper.policy.client_address import load_client_address
from gatekeeper.policy.fields import Fields
from gatekeeper.policy.geo import load_geo
from gatekeeper.policy.issuers import load_issuers
from gatekeeper.policy.keys import load_keys
from gatekeeper.policy.model import Policy
from gatekeeper.policy.prices import load_prices
from gatekeeper.policy.refusals import load_refusals
from gatekeeper.policy.request_tenant import load_request_tenant
from gatekeeper.policy.resale import RESALE_OFF, load_resale
from gatekeeper.policy.routes import load_routes
from gatekeeper.policy.tenants import load_tenants
from gatekeeper.store import DEFAULT_STORE_URL, resolve_store_url, store_from_url

SUPPORTED_VERSIONS = (1,)


def load_policy(source: str | os.PathLike[str] | Mapping[str, Any]) -> Policy:
    """Load and validate a policy file (by path) or an already-parsed mapping."""
    if isinstance(source, Mapping):
        return compile_policy(source, "policy")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([ConfigError("(file)", str(path), f"cannot be read: {exc}")],
                          str(path)) from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise PolicyError([ConfigError("(file)", str(path), _yaml_problem(exc))],
                          str(path)) from exc
    return compile_policy(data if data is not None else {}, str(path), path.resolve().parent)


def compile_policy(data: object, source: str = "policy",
                   directory: Path | None = None) -> Policy:
    """``directory``: where the policy file is; relative SQLite paths are relative to it
    (the default store included), so the CLI and servers agree whatever their cwd."""
    errors: list[ConfigError] = []
    top = Fields(data, "", errors)
    version = top.get("version", int, 1)
    if version not in SUPPORTED_VERSIONS:
        top.error("version", version, f"is not supported (supported: {SUPPORTED_VERSIONS})")
    store = top.get("store", str, None)
    if store is not None:
        try:
            store_from_url(store)
        except ConfigError as exc:
            errors.append(exc)
    if directory is not None:
        store = resolve_store_url(store or DEFAULT_STORE_URL, directory)
    resale = load_resale(top.section("resale")) if top.has("resale") else RESALE_OFF
    policy = Policy(
        tenants=load_tenants(top.entries("tenants"), resale),
        routes=load_routes(top.section("routes")),
        client_address=load_client_address(top.section("client_address")),
        request_tenant=load_request_tenant(top.section("request_tenant")),
        keys=load_keys(top.section("keys")),
        issuers=load_issuers(top.section("jwt")),
        geo=load_geo(top.section("geo"), directory),
        store=store,
        source=source,
        answers=load_refusals(top.section("refusals")),
        prices=load_prices(top.section("prices")),
        resale=resale,
        audit_stream=load_audit(top.section("audit")),
        on_store_error=top.choice("on_store_error", ("fail_closed", "fail_open"),
                                  "fail_closed"),
    )
    if policy.audit_stream is not None and directory is not None:
        try:
            stream_url(policy.audit_stream, policy.store)
        except ConfigError as exc:
            errors.append(exc)
    _check_issuer_tenants(policy, errors)
    _check_spend_is_priced(policy, errors)
    if policy.geo.cdn_header and not policy.client_address.trusted_proxies:
        errors.append(ConfigError("geo.cdn_header", policy.geo.cdn_header,
                                  "is never believed without client_address.trusted_proxies"))
    top.finish()
    if errors:
        raise PolicyError(errors, source)
    return policy


def _check_issuer_tenants(policy: Policy, errors: list[ConfigError]) -> None:
    for issuer in policy.issuers:
        for i, name in enumerate(issuer.tenants or ()):
            if name not in policy.tenants:
                errors.append(ConfigError(f"{issuer.field}.tenants[{i}]", name,
                                          "is not a tenant in this policy"))


def _check_spend_is_priced(policy: Policy, errors: list[ConfigError]) -> None:
    """A spend limit over an unpriced model would count nothing: require ``prices.default``."""
    if policy.prices.default is not None:
        return
    for name, tenant in policy.tenants.items():
        limits = tenant.limits
        for scope, found in (("", limits.per_key), ("per_tenant.", limits.per_tenant),
                             ("per_client.", limits.per_client)):
            for field in ("daily_spend", "monthly_spend"):
                value = getattr(found, field)
                if value is not None:
                    errors.append(ConfigError(
                        f"tenants.{name}.limits.{scope}{field}", value / 1_000_000,
                        "needs a top-level prices section with a default price"))


class _Refused(yaml.composer.ComposerError):
    """YAML that parses, but that a policy may not use."""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line naming where the file went wrong."""
    what = "is refused" if isinstance(exc, _Refused) else "is not valid YAML"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = f" ({exc.context})" if exc.context else ""
        return f"{what}{where}: {exc.problem}{context}"
    return f"{what}: {' '.join(str(exc).split())}"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a second `acme:` must not silently win) and
    anchors and aliases (nine lines of them expand into 387 million strings)."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(None, None, "anchors and aliases (&name, *name) are not allowed in "
                                       "a policy; write the value out", event.start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode,
                       deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key (a list or mapping used as a name)",
                key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

"""What a reload from one policy to another would change, field by field.

A pure function over two compiled policies, for ``gatekeeper check-config --diff OLD NEW``
and for a reload to log what it swapped in. Fields are named by their path in the compiled
policy (``tenants.acme.limits.per_key.requests``); the store URL and the pepper's source
cannot change on reload (``Gatekeeper.reload`` refuses them), so their changes are marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatekeeper.errors import redact_url
from gatekeeper.policy.canonical import Plain, canonical
from gatekeeper.policy.model import Policy

NOT_RELOADABLE = ("store", "keys.pepper_env", "keys.pepper_file")
"""Fields fixed for the life of a process: a reload that changes one is refused."""
HIDDEN = "(not shown)"
"""What a ``*_env`` field shows: a secret pasted where a variable's name belongs stays out of
terminals and CI logs, as in ConfigError."""
_WHOLE = frozenset({"refusals"})
"""Compared as one value: ``refusals.conceal`` rewrites many reasons at once."""


@dataclass(frozen=True, slots=True)
class Change:
    field: str
    old: Plain
    new: Plain
    """``None`` on the side where the field (a tenant, an issuer, a price) is absent."""
    reloadable: bool = True


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    tenants_added: tuple[str, ...]
    tenants_removed: tuple[str, ...]
    changes: tuple[Change, ...]
    """Every other difference, tenants' own fields included, in a stable order."""

    @property
    def empty(self) -> bool:
        return not (self.tenants_added or self.tenants_removed or self.changes)

    @property
    def restart_needed(self) -> bool:
        return any(not c.reloadable for c in self.changes)


def policy_diff(old: Policy, new: Policy) -> PolicyDiff:
    before, after = _comparable(old), _comparable(new)
    old_tenants, new_tenants = before.pop("tenants"), after.pop("tenants")
    changes: list[Change] = []
    for name in sorted(set(old_tenants) & set(new_tenants)):
        _walk(f"tenants.{name}", old_tenants[name], new_tenants[name], changes)
    _walk("", before, after, changes)
    for field, old_url, new_url in (("store", old.store, new.store),):
        if old_url != new_url:
            changes.append(Change(field, redact_url(str(old_url)), redact_url(str(new_url)),
                                  reloadable=False))
    return PolicyDiff(tuple(sorted(set(new_tenants) - set(old_tenants))),
                      tuple(sorted(set(old_tenants) - set(new_tenants))), tuple(changes))


def _comparable(policy: Policy) -> dict[str, Any]:
    data: dict[str, Any] = canonical(policy)
    # issuers are a list in the compiled policy, a mapping by name in the file
    data["issuers"] = {i["name"]: i for i in data["issuers"]}
    data["refusals"] = data.pop("answers")  # what each reason is answered as, by the file's name
    return data


def _walk(path: str, old: Any, new: Any, changes: list[Change]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict) and path not in _WHOLE:
        for key in sorted(set(old) | set(new)):
            _walk(f"{path}.{key}" if path else key, old.get(key), new.get(key), changes)
        return
    if path.endswith("_env"):
        old, new = (None if old is None else HIDDEN), (None if new is None else HIDDEN)
    changes.append(Change(path, old, new, reloadable=path not in NOT_RELOADABLE))

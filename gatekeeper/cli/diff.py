"""``gatekeeper check-config --diff OLD NEW``: what reloading NEW over OLD would change.

Exit codes, like diff(1) plus one: 0 nothing would change; 1 a reload would apply the
changes; 2 a policy is invalid (a reload would be refused, the error names the field); 3 a
change cannot be reloaded (store URL, pepper): restart instead.
"""

from __future__ import annotations

import json

from gatekeeper.policy.canonical import Plain
from gatekeeper.policy.diff import PolicyDiff, policy_diff
from gatekeeper.policy.load import load_policy

SAME, CHANGED, RESTART = 0, 1, 3


def run_diff(old_path: str, new_path: str) -> int:
    diff = policy_diff(load_policy(old_path), load_policy(new_path))
    for line in diff_lines(diff):
        print(line)
    if diff.empty:
        print(f"{new_path}: a reload over {old_path} changes nothing")
        return SAME
    if diff.restart_needed:
        print(f"{new_path}: a reload over {old_path} would be refused (restart to apply "
              "the changes marked !)")
        return RESTART
    print(f"{new_path}: a reload over {old_path} would apply {_count(diff)}")
    return CHANGED


def diff_lines(diff: PolicyDiff) -> list[str]:
    """``+`` tenant added, ``-`` tenant removed, ``~`` field changed, ``!`` field changed
    that only a restart applies."""
    lines = [f"+ tenants.{name}: added" for name in diff.tenants_added]
    lines += [f"- tenants.{name}: removed" for name in diff.tenants_removed]
    for change in diff.changes:
        mark = "~" if change.reloadable else "!"
        note = "" if change.reloadable else " (not reloadable: restart)"
        lines.append(f"{mark} {change.field}: {_shown(change.old)} -> {_shown(change.new)}{note}")
    return lines


def _count(diff: PolicyDiff) -> str:
    n = len(diff.tenants_added) + len(diff.tenants_removed) + len(diff.changes)
    return f"{n} change{'s' if n != 1 else ''}"


def _shown(value: Plain, width: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                            ensure_ascii=False)
    return text if len(text) <= width else text[:width - 3] + "..."

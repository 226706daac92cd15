"""Checkouts to measure, named on the command line as ``[LABEL=]PATH``."""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Tree:
    label: str
    path: Path


THIS_TREE = Tree("this tree", ROOT)


def parse_tree(text: str) -> Tree:
    """``before=/tmp/gk-main-before`` or just a path (then the path is the label)."""
    label, sep, path = text.partition("=")
    if not sep:
        label, path = text, text
    where = Path(path).expanduser().resolve()
    if not (where / "gatekeeper" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{where} has no gatekeeper/__init__.py")
    return Tree(label, where)


def describe(tree: Tree) -> str:
    """``**label** = `path` (commit abc1234[, gatekeeper/ with local changes])``."""
    text = f"**{tree.label}** = `{tree.path}`"
    try:
        commit = subprocess.run(
            ["git", "-C", str(tree.path), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree.path), "status", "--porcelain", "--", "gatekeeper"],
            capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return text
    if commit:
        text += f" (commit {commit}{', gatekeeper/ with local changes' if dirty else ''})"
    return text

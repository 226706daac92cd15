"""Which modules the install compiles to C (``setup.py``, mypyc), and whether this process
runs them: the request path, which with limits on runs in well under half the instructions
of the same modules interpreted. The ``.py`` files stay the source of truth (and the fallback:
an install that cannot compile runs them as they are).

Kept free of imports at module level: ``setup.py`` reads ``SOURCES`` before anything is
installed.
"""

from __future__ import annotations

SOURCES = (
    # the order a request meets them
    "gatekeeper/middleware.py",
    "gatekeeper/facts.py",
    "gatekeeper/client_address.py",
    "gatekeeper/networks.py",
    "gatekeeper/auth.py",
    "gatekeeper/keys.py",
    "gatekeeper/principal.py",
    "gatekeeper/decision.py",
    "gatekeeper/runtime.py",
    "gatekeeper/pipeline.py",
    "gatekeeper/admission.py",
    "gatekeeper/request_body.py",
    "gatekeeper/token_estimate.py",
    "gatekeeper/limits/gcra.py",
    "gatekeeper/limits/windows.py",
    "gatekeeper/limits/answer.py",
    "gatekeeper/store/memory_plan.py",
    "gatekeeper/store/memory_counters.py",
    "gatekeeper/store/guarded.py",
    "gatekeeper/store/leased.py",
    "gatekeeper/store/redis_counters.py",
    "gatekeeper/store/redis_settles.py",
    "gatekeeper/charge.py",
    "gatekeeper/responder.py",
    "gatekeeper/usage.py",
    "gatekeeper/clock.py",
    "gatekeeper/metrics.py",
    "gatekeeper/policy/request_policy.py",
    "gatekeeper/resale/stage.py",
    "gatekeeper/resale/state.py",
    "gatekeeper/resale/scorer.py",
    "gatekeeper/resale/score.py",
)
"""Compiled code differs from Python in one way that bit: a bare ``raise`` after an
``await`` inside an ``except`` block re-raises whatever that await last handled (a
cancellation swallowed by a shielded scope), not the block's own exception. Name it
(``raise exc``), or await outside the handler (``Responder.run``)."""

MODULES = tuple(s.removesuffix(".py").replace("/", ".") for s in SOURCES)


def interpreted() -> list[str]:
    """The modules of ``MODULES`` this process runs from their ``.py`` (all of them in a
    pure install; none in a compiled one)."""
    import importlib

    return [name for name in MODULES
            if str(importlib.import_module(name).__file__).endswith(".py")]


def stale() -> list[str]:
    """Compiled modules whose ``.py`` changed after the build: Python still imports the
    build, so the change would not run (``make`` rebuilds them)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = []
    for source in SOURCES:
        py = root / source
        builds = list(py.parent.glob(py.stem + ".*.so")) + list(py.parent.glob(py.stem + ".*.pyd"))
        if builds and max(b.stat().st_mtime for b in builds) < py.stat().st_mtime:
            out.append(source)
    return out

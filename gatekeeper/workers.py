"""How many worker processes the server was asked for, read from its command line and
environment: counters in process memory are per process, and an operator must be told.

Read, not measured: uvicorn (``--workers N``, ``WEB_CONCURRENCY``) and gunicorn (``-w N``,
``--workers N``, ``WEB_CONCURRENCY``, ``GUNICORN_CMD_ARGS``) say it there, and a worker spawned
by uvicorn sees its parent's ``sys.argv``. A count set elsewhere (a gunicorn config file) is
not seen: the README says what several workers mean either way.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

_FLAGS = ("--workers", "-w")


def declared_workers(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """The worker count the command line or environment asks for; 1 when none is given."""
    found = _from_args(argv)
    if found is None and "GUNICORN_CMD_ARGS" in environ:
        try:
            found = _from_args(shlex.split(environ["GUNICORN_CMD_ARGS"]))
        except ValueError:
            found = None
    if found is None:
        found = _number(environ.get("WEB_CONCURRENCY"))
    return found if found is not None and found > 0 else 1


def _from_args(argv: Sequence[str]) -> int | None:
    for i, arg in enumerate(argv):
        for flag in _FLAGS:
            if arg == flag and i + 1 < len(argv):
                return _number(argv[i + 1])
            if arg.startswith(flag + "=") or (flag == "-w" and arg.startswith("-w") and
                                              arg[2:].isdigit()):
                return _number(arg.split("=", 1)[1] if "=" in arg else arg[2:])
    return None


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None

"""Compiles the request path with mypyc: the same typed modules, built to C extensions that
Python imports before the ``.py`` beside them (with limits on, well under half the
instructions per request). Everything else stays Python, and so does everything when it
cannot build: ``GATEKEEPER_COMPILE=0``, no mypyc, or no C compiler (a warning, then the pure
install).
``gatekeeper.COMPILED`` says which one a process runs.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# gatekeeper/compiled.py lists them (and the one way compiled code differs); read, not imported
HOT_PATH = list(runpy.run_path("gatekeeper/compiled.py")["SOURCES"])


class OptionalBuildExt(build_ext):
    """A failed compile leaves the pure-Python install: slower, never broken."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler, no headers: the .py files are complete
            _skip(e)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            _skip(e)


def _skip(error: Exception) -> None:
    print(f"gatekeeper: compiling the request path failed ({error}); installing it as "
          "pure Python", file=sys.stderr)


def extensions() -> list[Any]:
    if os.environ.get("GATEKEEPER_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _skip(ImportError("mypyc is not installed"))
        return []
    try:  # mypyc type-checks first: it needs the dependencies' types (pyproject's build needs)
        return mypycify(HOT_PATH, opt_level="3", group_name="gatekeeper._compiled")
    except (Exception, SystemExit) as e:  # mypy reports its errors by exiting
        _skip(RuntimeError(f"mypyc could not type-check it ({e})"))
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

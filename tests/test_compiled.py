"""The install compiles the request path (setup.py): CI checks it did, so the suite tests the
build that ships, and every install is all one or all the other."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client import generate_latest

import gatekeeper
from gatekeeper import Metrics
from gatekeeper.compiled import MODULES, interpreted


def test_the_request_path_is_compiled_whole_or_not_at_all() -> None:
    pure = interpreted()
    assert pure in ([], list(MODULES)), f"partly compiled: {pure} interpreted"
    assert gatekeeper.COMPILED is (pure == [])
    if os.environ.get("CI") == "true":
        assert gatekeeper.COMPILED, "CI runs the compiled build (setup.py): it did not build"


def test_the_build_info_metric_says_whether_it_is_compiled() -> None:
    exposition = generate_latest(Metrics().registry).decode()
    assert f'compiled="{str(gatekeeper.COMPILED).lower()}"' in exposition


def test_a_str_pepper_is_refused_by_name_not_with_a_type_error() -> None:
    """The compiled build checks argument types itself: a str pepper must still get the
    ConfigError that names the field (and never shows the value)."""
    code = ("from gatekeeper import Gatekeeper, ConfigError\n"
            "try:\n    Gatekeeper(None, {'tenants': {}}, store='memory://', pepper='p' * 40)\n"
            "except ConfigError as e:\n    print(e.field, 'p' * 40 in str(e))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.stdout.split() == ["pepper", "False"], out.stderr[-2000:]

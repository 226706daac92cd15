"""``gatekeeper geo``, run as a real subprocess: country, ASN, coordinates and the resolver
that answered; a bad address or file is one clear line and exit 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.geo import mmdb_fixtures as fx

DAY = 86_400


def geo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gatekeeper.cli.main", "geo", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def _policy(tmp_path: Path) -> Path:
    fx.geolite2_city(tmp_path / "city.mmdb")
    fx.geolite2_asn(tmp_path / "asn.mmdb")
    policy = tmp_path / "policy.yaml"
    policy.write_text("geo:\n  files: {city: city.mmdb, asn: asn.mmdb}\n")
    return policy


def test_embedded_default_without_a_policy() -> None:
    out = geo("8.8.8.8", "2001:4860:4860::8888", "192.0.2.1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("8.8.8.8  country=US  asn=-") and "resolver=embedded" in lines[0]
    assert "group=2001:4860:4860::/48" in lines[1]
    assert "country=-" in lines[2] and "resolver=none" in lines[2]


def test_files_from_the_policy_and_json(tmp_path: Path) -> None:
    out = geo("192.0.2.10", "8.8.8.8", "--policy", str(_policy(tmp_path)), "--json")
    assert out.returncode == 0, out.stderr
    frankfurt, google = (json.loads(line) for line in out.stdout.splitlines())
    assert frankfurt == {"ip": "192.0.2.10", "country": "DE", "asn": 64496,
                         "as_name": "Example Transit", "latitude": fx.FRANKFURT[0],
                         "longitude": fx.FRANKFURT[1], "resolver": "mmdb",
                         "network_group": "AS64496"}
    assert (google["country"], google["resolver"]) == ("US", "embedded")


def test_text_line_shows_asn_and_coordinates(tmp_path: Path) -> None:
    out = geo("192.0.2.10", "--policy", str(_policy(tmp_path)))
    assert out.stdout.strip() == (
        "192.0.2.10  country=DE  asn=AS64496 (Example Transit)  coordinates=50.1109,8.6821  "
        "resolver=mmdb  group=AS64496")


def test_a_bad_address_is_one_line_and_exit_2() -> None:
    out = geo("8.8.8.8", "not-an-ip")
    assert out.returncode == 2
    assert out.stdout == ""  # every address is checked before any is printed
    assert out.stderr.strip() == 'gatekeeper: error: IP: "not-an-ip" is not an IP address'


def test_a_missing_or_broken_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("geo:\n  files: {country: missing.mmdb}\n")
    out = geo("8.8.8.8", "--policy", str(policy))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("gatekeeper: error: geo.files.country:")
    assert len(out.stderr.strip().splitlines()) == 1
    policy.write_text("geo:\n  files: {country: 7}\n")
    out = geo("8.8.8.8", "--policy", str(policy))
    assert out.returncode == 2 and "geo.files.country: 7 must be a string" in out.stderr


def test_a_stale_file_warns_on_stderr(tmp_path: Path) -> None:
    fx.geolite2_country(tmp_path / "old.mmdb", build_epoch=int(time.time() - 90 * DAY))
    policy = tmp_path / "policy.yaml"
    policy.write_text("geo:\n  files: {country: old.mmdb}\n  max_age_days: 30\n")
    out = geo("192.0.2.1", "--policy", str(policy))
    assert out.returncode == 0
    assert "country=DE" in out.stdout
    assert "was built 90 days ago" in out.stderr

"""The embedded open country database: present, attributed, sensible for well-known addresses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from geo import EMBEDDED_DB
from geo.resolver import GeoResolver, embedded_age_days, parse_ip
from tests.streams import PROJECT_ROOT

pytestmark = pytest.mark.skipif(not EMBEDDED_DB.is_file(), reason="embedded database not built "
                                "(python -m geo.build_embedded_db)")


@pytest.mark.parametrize("address, country", [
    ("114.114.114.114", "CN"),     # 114DNS, a Chinese public resolver
    ("223.5.5.5", "CN"),           # AliDNS
    ("5.9.0.1", "DE"),             # Hetzner Online, a German hosting network
    ("8.8.8.8", "US"),
    ("2400:3200::1", "CN"),        # AliDNS over IPv6
])
def test_embedded_database_answers_well_known_addresses(address, country):
    assert GeoResolver([str(EMBEDDED_DB)]).lookup(parse_ip(address)).country == country


def test_attribution_and_build_date_are_shipped_and_shown():
    attribution = (EMBEDDED_DB.parent / "ATTRIBUTION.md").read_text()
    assert "CC BY-SA 4.0" in attribution and "IPFire" in attribution
    built, age = embedded_age_days()
    version = subprocess.run([sys.executable, "-m", "agent.cli", "--version"], capture_output=True, text=True,
                             cwd=PROJECT_ROOT, timeout=60).stdout
    assert f"built {built}" in version and age >= 0


def test_stale_embedded_database_warns_on_replay(tmp_path):
    built, age = embedded_age_days()
    sample = PROJECT_ROOT / "samples" / "sample-egress.pcap"
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(sample), "--eve", str(tmp_path / "e")],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 0
    assert ("days old" in result.stderr) == (age > 90)

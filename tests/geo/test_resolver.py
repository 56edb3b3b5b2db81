"""GeoIP lookups and jurisdictions: MaxMind's test databases and databases built here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import UsageError
from geo.jurisdiction import load_profile
from geo.resolver import SPECIAL, UNKNOWN, GeoResolver, parse_ip
from tests.geo.conftest import NETWORKS
from tests.streams import CORPUS, CORPUS_MISSING, PROJECT_ROOT

GEOIP = CORPUS / "geoip"
def first(net: str) -> bytes:
    base = net.split("/")[0]
    return parse_ip(base[:-1] + "1" if base.endswith("0") else base + "1")


def test_own_database_countries_and_cn_profile(built_db: Path):
    resolver = GeoResolver([str(built_db)])
    cn = load_profile("cn")
    for code, net in NETWORKS.items():
        assert resolver.lookup(first(net)).country == code
    assert resolver.lookup(parse_ip("2400:da00::1")).country == "CN"
    assert resolver.lookup(parse_ip("::ffff:1.80.0.1")).country == "CN"          # IPv4-mapped
    assert [cn.cross_border(c) for c in ("CN", "HK", "MO", "TW", "US", "DE")] == [False, True, True, True, True, True]
    assert resolver.lookup(parse_ip("9.9.9.9")).country == UNKNOWN and cn.cross_border(UNKNOWN) is None


@pytest.mark.parametrize("address", ["10.1.2.3", "127.0.0.1", "169.254.1.1", "224.0.0.251", "255.255.255.255",
                                     "192.0.2.7", "198.51.100.7", "203.0.113.7", "100.64.0.1", "fe80::1",
                                     "ff02::1", "2001:db8::1", "::1"])
def test_special_purpose_addresses_are_never_abroad(built_db: Path, address: str):
    place = GeoResolver([str(built_db)]).lookup(parse_ip(address))
    assert place.country == SPECIAL and load_profile("cn").cross_border(SPECIAL) is False


def test_eea_profile_and_home_override():
    eea = load_profile("eea")
    assert eea.cross_border("DE") is False and eea.cross_border("NO") is False and eea.cross_border("US") is True
    assert eea.of("FR") == "EEA" and "JP" in eea.adequate_if_qualifies
    assert load_profile("cn").with_home(("CN", "HK")).cross_border("HK") is False
    with pytest.raises(UsageError):
        load_profile("atlantis")


def _corpus(name: str) -> str:
    path = GEOIP / name
    if not path.is_file():
        pytest.skip(CORPUS_MISSING)
    return str(path)


def test_maxmind_test_databases_country_city_and_asn():
    resolver = GeoResolver([_corpus("mm-GeoIP2-City-Test.mmdb"), _corpus("mm-GeoLite2-ASN-Test.mmdb")])
    assert resolver.lookup(parse_ip("175.16.199.1")).country == "CN"          # City DB: no TypeError
    assert resolver.lookup(parse_ip("2001:2e0::1")).country == "HK"
    place = resolver.lookup(parse_ip("214.78.120.1"))
    assert (place.country, place.asn, place.as_org) == ("US", 721, "DoD Network Information Center")
    country_only = GeoResolver([_corpus("mm-GeoIP2-Country-Test.mmdb")])
    assert country_only.lookup(parse_ip("111.235.160.1")).country == "CN"
    assert country_only.lookup(parse_ip("2001:238::1")).country == "TW"


def _geo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "geo", *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=60)


def test_geo_command_prints_one_object_per_address(built_db: Path):
    result = _geo_cli("1.32.0.1", "1.80.0.1", "--geoip-db", str(built_db))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [
        {"ip": "1.32.0.1", "country": "HK", "jurisdiction": "HK", "cross_border": True, "asn": None, "as_org": None},
        {"ip": "1.80.0.1", "country": "CN", "jurisdiction": "CN", "cross_border": False, "asn": None, "as_org": None}]
    home = _geo_cli("1.32.0.1", "--geoip-db", str(built_db), "--home", "CN,HK")
    assert json.loads(home.stdout)["cross_border"] is False


@pytest.mark.parametrize("args, message", [
    (["1.2.3"], "not an IP address"),
    (["1.1.1.1", "--geoip-db", "/nonexistent.mmdb"], "not found"),
    (["1.1.1.1", "--geoip-db", "{readme}"], "not a usable MaxMind DB"),
])
def test_geo_command_bad_input(args, message):
    args = [a.format(readme=PROJECT_ROOT / "README.md") for a in args]
    result = _geo_cli(*args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.parametrize("name, message", [("mm-GeoIP2-City-Test-Broken-Double-Format.mmdb", "damaged"),
                                           ("mm-GeoIP2-City-Test-Invalid-Node-Count.mmdb", "not a usable")])
def test_broken_maxmind_databases_are_a_clear_error(name, message):
    result = _geo_cli("175.16.199.1", "--geoip-db", _corpus(name))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr

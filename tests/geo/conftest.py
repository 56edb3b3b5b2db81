"""A Country database built by the tests (mmdb-writer) with known networks per country."""

from __future__ import annotations

from pathlib import Path

import pytest

NETWORKS = {"CN": "1.80.0.0/16", "HK": "1.32.0.0/16", "MO": "1.64.0.0/16", "TW": "1.160.0.0/16",
            "US": "3.0.0.0/15", "DE": "5.0.0.0/16"}
V6 = ("2400:da00::/32", "CN")


@pytest.fixture(scope="module")
def built_db(tmp_path_factory) -> Path:
    """A Country database of our own, written with mmdb-writer (what users do for private data)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet
    writer = MMDBWriter(ip_version=6, database_type="GeoIP2-Country", ipv4_compatible=True)
    for code, net in NETWORKS.items():
        writer.insert_network(IPSet([net]), {"country": {"iso_code": code}})
    writer.insert_network(IPSet([V6[0]]), {"country": {"iso_code": V6[1]}})
    path = tmp_path_factory.mktemp("mmdb") / "own-country.mmdb"
    writer.to_db_file(str(path))
    return path

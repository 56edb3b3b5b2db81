"""Events say where the data went: `geo` on flow and alert events, egress and ingress."""

from __future__ import annotations

import random
from pathlib import Path

from tests.test_classification_e2e import OK, post, replay, rid, tcp_conversation


def test_flow_events_carry_destination_country_and_jurisdiction(tmp_path: Path, built_db: Path):
    rng = random.Random(21)
    request = post(f"id={rid(rng)}".encode(), "application/x-www-form-urlencoded")
    packets = (tcp_conversation("10.0.0.5", "1.32.0.9", 40100, [request], [OK])                 # HK
               + tcp_conversation("10.0.0.5", "1.80.0.9", 40101, [request], [OK], t0=1_767_225_601.0))  # CN
    events, _ = replay(tmp_path, packets, "--geoip-db", str(built_db))
    flows = {e["dest_ip"]: e for e in events if e["event_type"] == "flow"}
    assert flows["1.32.0.9"]["geo"] == {"dest_country": "HK", "dest_jurisdiction": "HK", "cross_border": True,
                                        "asn": None, "as_org": None}
    assert flows["1.80.0.9"]["geo"]["dest_country"] == "CN" and flows["1.80.0.9"]["geo"]["cross_border"] is False
    # Same values to both: only the transfer abroad (HK is outside the CN profile's home) alerts.
    alerts = [e for e in events if e["event_type"] == "alert"]
    assert [(a["dest_ip"], a["geo"]["dest_country"]) for a in alerts] == [("1.32.0.9", "HK")]
    assert flows["1.80.0.9"]["classification"]["matches"][0]["count"] == 1


def test_ingress_flow_names_the_outside_client(tmp_path: Path, built_db: Path):
    events, _ = replay(tmp_path, tcp_conversation("5.0.0.9", "10.0.0.7", 51000, [b"GET / HTTP/1.1\r\n\r\n"], [OK]),
                       "--geoip-db", str(built_db), "--home", "CN")
    (flow,) = events
    assert flow["direction"] == "ingress"
    assert flow["geo"]["src_country"] == "DE" and flow["geo"]["cross_border"] is True


def test_replay_with_city_and_asn_databases_fills_asn(tmp_path: Path):
    import pytest

    from tests.streams import CORPUS, CORPUS_MISSING
    city, asn = CORPUS / "geoip" / "mm-GeoIP2-City-Test.mmdb", CORPUS / "geoip" / "mm-GeoLite2-ASN-Test.mmdb"
    if not (city.is_file() and asn.is_file()):
        pytest.skip(CORPUS_MISSING)
    events, _ = replay(tmp_path, tcp_conversation("10.0.0.5", "214.78.120.1", 40200, [b"GET / HTTP/1.1\r\n\r\n"], [OK]),
                       "--geoip-db", str(city), "--geoip-db", str(asn))
    assert events[0]["geo"] == {"dest_country": "US", "dest_jurisdiction": "US", "cross_border": True,
                                "asn": 721, "as_org": "DoD Network Information Center"}

"""Prometheus metrics: naming conventions, bounded labels, values from a real replay, the
textfile for replay, and the /metrics listener with TLS and basic auth."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import Config
from agent.metrics import MetricsListen, Snapshot, registry_for, serve_metrics
from agent.pipeline import Pipeline, open_captures
from agent.stats import Stats
from tests.streams import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "samples" / "sample-egress.pcap"
_NAME = re.compile(r"^egresswatch_[a-z][a-z0-9_]*$")
_HOSTNAME = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$", re.I)


def _frames() -> int:
    from agent.capture.pcapfile import CaptureFile
    capture = CaptureFile(str(SAMPLE))
    try:
        return sum(1 for _ in capture.frames())
    finally:
        capture.close()


class Drop:
    def emit(self, event: dict) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def replay_snapshot() -> Snapshot:
    stats = Stats()
    pipeline = Pipeline(Config(), [Drop()], stats)
    pipeline.replay(open_captures([str(SAMPLE)]))
    return Snapshot(stats=stats, geoip_builds=dict(pipeline.geo.database_builds))


def _families(snapshot: Snapshot) -> dict:
    from prometheus_client import generate_latest
    text = generate_latest(registry_for(lambda: snapshot, process=False)).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_names_units_and_types_follow_prometheus_conventions(replay_snapshot):
    families = _families(replay_snapshot)
    assert len(families) >= 20
    for name, family in families.items():
        assert _NAME.match(name), name
        assert family.documentation, name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        assert not name.endswith("_count") and "milliseconds" not in name, name
    assert families["egresswatch_scan_duration_seconds"].type == "histogram"
    assert families["egresswatch_flows_active"].type == "gauge"


def test_no_label_value_is_an_address_a_hostname_or_a_value(replay_snapshot):
    for family in _families(replay_snapshot).values():
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label in ("le", "version"):
                    continue
                try:
                    ipaddress.ip_address(value)
                    pytest.fail(f"{sample.name}{{{label}={value}}} is an address")
                except ValueError:
                    pass
                assert not _HOSTNAME.match(value), f"{sample.name}{{{label}={value}}} looks like a host name"
                assert not any(ch.isdigit() for ch in value) or label == "kind", (sample.name, label, value)


def test_values_come_from_the_replay(replay_snapshot):
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in _families(replay_snapshot).values() for s in family.samples}
    stats = replay_snapshot.stats
    assert samples[("egresswatch_capture_packets_total", ())] == stats.packets == _frames()
    assert samples[("egresswatch_flows_total", (("cross_border", "true"),))] == stats.flows_ended["true"] > 0
    us_ids = samples[("egresswatch_classified_values_total", (("class", "cn_resident_id"), ("jurisdiction", "US")))]
    assert us_ids == stats.classified["cn_resident_id", "US"] > 0
    assert sum(v for (name, _), v in samples.items() if name == "egresswatch_alerts_total") >= stats.alerts > 0
    assert samples[("egresswatch_geoip_database_build_timestamp_seconds", (("database", "embedded"),))] > 1.7e9
    # One scan-duration observation per inspected flow that was scanned; cumulative buckets.
    scanned = samples[("egresswatch_scan_duration_seconds_count", ())]
    assert 0 < scanned <= stats.flow_events
    assert samples[("egresswatch_scan_duration_seconds_bucket", (("le", "+Inf"),))] == scanned
    assert samples[("egresswatch_scan_duration_seconds_sum", ())] > 0


def test_replay_writes_the_textfile(tmp_path: Path):
    textfile = tmp_path / "egresswatch.prom"
    subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(SAMPLE), "--eve", str(tmp_path / "e.json"),
                    "--metrics-textfile", str(textfile), "-q"], check=True, timeout=120, cwd=PROJECT_ROOT)
    families = {f.name: f for f in text_string_to_metric_families(textfile.read_text())}
    assert families["egresswatch_capture_packets"].samples[0].value == _frames()
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(SAMPLE), "--eve", "/dev/null",
                             "--metrics-textfile", str(tmp_path / "no" / "such" / "dir.prom"), "-q"],
                            capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("egresswatch: error: cannot write metrics textfile")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_listener_with_tls_and_basic_auth(tmp_path: Path, replay_snapshot):
    cert, key = _self_signed(tmp_path)
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    listen = MetricsListen(host="127.0.0.1", port=0, certfile=str(cert), keyfile=str(key),
                           basic_auth_user="prom", basic_auth_password_file=str(secret))
    server = serve_metrics(listen, registry_for(lambda: replay_snapshot))
    try:
        url = f"https://localhost:{server.server_port}/metrics"
        context = ssl.create_default_context(cafile=str(cert))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, context=context, timeout=10)
        assert refused.value.code == 401
        wrong = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"prom:x").decode()})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(wrong, context=context, timeout=10)
        right = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"prom:s3cret").decode()})
        body = urllib.request.urlopen(right, context=context, timeout=10).read().decode()
        assert f"egresswatch_capture_packets_total {float(_frames())}" in body
        assert "process_cpu_seconds_total" in body
    finally:
        server.shutdown()
        server.server_close()


def test_worker_resources_are_their_own_and_labelled_by_index():
    from agent.metrics import WorkerResources, own_resources
    mine = own_resources(3)
    spent = sum(i for i in range(300_000))          # some CPU time of this process, never none
    later = own_resources(3)
    assert spent and later.cpu_seconds >= mine.cpu_seconds > 0
    assert 10 * 2**20 < mine.resident_bytes < 4 * 2**30     # a Python with this project loaded
    families = _families(Snapshot(workers=[later, WorkerResources(0, 2.5, 123_456)]))
    cpu = {s.labels["worker"]: s.value for s in families["egresswatch_worker_cpu_seconds"].samples
           if s.name.endswith("_total")}
    assert cpu == {"0": 2.5, "3": later.cpu_seconds}
    assert families["egresswatch_worker_cpu_seconds"].type == "counter"
    resident = families["egresswatch_worker_resident_memory_bytes"]
    assert resident.type == "gauge" and {s.labels["worker"]: s.value for s in resident.samples} == \
        {"0": 123_456, "3": later.resident_bytes}
    assert "egresswatch_worker_cpu_seconds" not in _families(Snapshot())     # replay: no workers


def test_eve_write_errors_are_counted(tmp_path):
    from agent.exporters.eve import EveWriter
    full = EveWriter("/dev/full")                    # every flush fails: no space left on device
    for n in range(3):
        full.emit({"n": n})
        full.flush()
    full.close()
    assert full.write_errors == 4 and full.failure == "cannot write EVE output /dev/full: No space left on device"
    families = _families(Snapshot(eve_write_errors=full.write_errors))
    errors = families["egresswatch_eve_write_errors"]
    assert errors.type == "counter" and [s.value for s in errors.samples if s.name.endswith("_total")] == [4]

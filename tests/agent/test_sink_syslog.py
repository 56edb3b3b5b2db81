"""RFC 5424 syslog sink against a real rsyslogd the test starts itself (loopback only, own config).

rsyslogd runs in the foreground with a config written into the test's tmp dir: one input
(imtcp, imudp, or imtcp with the ossl TLS driver) on a free loopback port and one omfile action
writing the parsed header fields and MSG of egresswatch's messages; no system logging.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from agent.errors import UsageError
from agent.exporters.syslog import FACILITIES, SyslogFormatter, SyslogOptions, SyslogSink, parse_address
from tests.agent.test_sink_spool import alert_events

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
NO_RSYSLOG = "rsyslogd not installed (Debian package rsyslog); the syslog sink tests need a real receiver"
WAIT = 30.0                              # seconds any wait for the receiver may take before the test fails

# RFC 5424 header as the ABNF has it: PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) ([!-~]{1,255}) ([!-~]{1,48}) "
                     rb"([!-~]{1,128}) ([!-~]{1,32}) - (.*)$", re.S)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Rsyslogd:
    """One rsyslogd of our own: start, kill -9, restart on the same port, read what it wrote."""

    def __init__(self, workdir: Path, transport: str, tls: dict[str, Path] | None = None) -> None:
        self.workdir = workdir
        self.transport = transport
        self.port = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
        self.output = workdir / "received.log"
        self.config = workdir / "rsyslog.conf"
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(exist_ok=True)
        lines = [f'global(workDirectory="{workdir}" maxMessageSize="64k"']
        if tls:
            lines[0] += (f' defaultNetstreamDriver="ossl" defaultNetstreamDriverCAFile="{tls["ca"]}"'
                         f' defaultNetstreamDriverCertFile="{tls["cert"]}"'
                         f' defaultNetstreamDriverKeyFile="{tls["key"]}"')
        lines[0] += ")"
        if transport == "udp":
            lines += ['module(load="imudp")', f'input(type="imudp" address="127.0.0.1" port="{self.port}")']
        elif tls:
            lines += ['module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" '
                      'streamDriver.authMode="x509/certvalid")',
                      f'input(type="imtcp" address="127.0.0.1" port="{self.port}")']
        else:
            lines += ['module(load="imtcp")', f'input(type="imtcp" address="127.0.0.1" port="{self.port}")']
        lines += [
            'template(name="fields" type="string" string="%syslogfacility%|%syslogseverity%|%hostname%|'
            '%app-name%|%procid%|%msgid%|%structured-data%|%timereported:::date-rfc3339%|%msg%\\n")',
            f'if $app-name == "egresswatch" then action(type="omfile" file="{self.output}" template="fields")',
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def config_ok(self) -> tuple[bool, str]:
        check = subprocess.run([RSYSLOGD, "-N1", "-f", str(self.config)], capture_output=True, text=True, timeout=60)
        return check.returncode == 0, (check.stderr + check.stdout).strip()

    def start(self) -> None:
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.workdir / "pid")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.workdir / "rsyslogd.err", "ab"))
        deadline = time.monotonic() + WAIT
        while not self._listening():
            assert self.proc.poll() is None, (self.workdir / "rsyslogd.err").read_text()
            assert time.monotonic() < deadline, "rsyslogd did not start listening"
            time.sleep(0.05)

    def _listening(self) -> bool:
        """The port is bound by rsyslogd (read from /proc, so no probe connection shows up as a session)."""
        table = "/proc/net/udp" if self.transport == "udp" else "/proc/net/tcp"
        want = f"0100007F:{self.port:04X}"
        with open(table) as source:
            for line in source.readlines()[1:]:
                fields = line.split()
                if fields[1] == want and (self.transport == "udp" or fields[3] == "0A"):   # 0A = LISTEN
                    return True
        return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)

    def records(self) -> list[dict]:
        if not self.output.exists():
            return []
        out = []
        for line in self.output.read_text(encoding="utf-8").splitlines():
            facility, severity, host, app, procid, msgid, sd, stamp, msg = line.split("|", 8)
            out.append({"facility": int(facility), "severity": int(severity), "hostname": host, "app": app,
                        "procid": procid, "msgid": msgid, "sd": sd, "timestamp": stamp, "event": json.loads(msg)})
        return out

    def wait_for(self, count: int) -> list[dict]:
        deadline = time.monotonic() + WAIT
        while True:
            got = self.records()
            if len(got) >= count or time.monotonic() >= deadline:
                return got
            time.sleep(0.05)


@pytest.fixture
def rsyslog_factory(tmp_path):
    if not Path(RSYSLOGD).exists():
        pytest.skip(NO_RSYSLOG)
    started: list[Rsyslogd] = []

    def make(transport: str, tls: dict[str, Path] | None = None) -> Rsyslogd:
        receiver = Rsyslogd(tmp_path / f"rsyslog-{len(started)}", transport, tls)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


def sink_options(tmp_path: Path, port: int, transport: str = "tcp", **overrides) -> SyslogOptions:
    values = {"address": f"127.0.0.1:{port}", "transport": transport, "spool_dir": str(tmp_path / "spool"),
              "spool_limit_bytes": 8 << 20, "retry_initial": 0.05, "retry_max": 0.5, "settle_seconds": 1.0,
              "drain_timeout": WAIT, "rate_limit_events": 0}
    return SyslogOptions(**{**values, **overrides})


# -- the message format ---------------------------------------------------------------------------------

def test_message_is_rfc5424_with_the_eve_json_as_msg():
    formatter = SyslogFormatter(FACILITIES["local5"], (3, 4, 5), 6, "sensor-7.example", 4242)
    created = 1_795_000_000_123_456
    for severity, expected in ((1, 3), (2, 4), (3, 5)):
        event = alert_events(1, severity=severity)[0]
        match = RFC5424.match(formatter.format(event, created))
        assert match, "not an RFC 5424 message"
        pri, stamp, host, app, procid, msgid, msg = match.groups()
        assert int(pri) == 21 * 8 + expected
        assert stamp == datetime.datetime.fromtimestamp(created / 1e6, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ").encode()
        assert (host, app, procid, msgid) == (b"sensor-7.example", b"egresswatch", b"4242", b"alert")
        assert json.loads(msg.decode("utf-8")) == event
        assert not msg.startswith(b"\xef\xbb\xbf")        # no BOM in front of the JSON
    flow = {"event_type": "flow", "flow_id": 1}
    assert RFC5424.match(formatter.format(flow, created)).group(1) == str(21 * 8 + 6).encode()


def test_header_fields_that_break_the_grammar_become_nil():
    formatter = SyslogFormatter(16, (3, 4, 5), 6, "host with spaces", 1)
    match = RFC5424.match(formatter.format({"event_type": "x" * 40}, 0))
    assert match.group(3) == b"-" and match.group(6) == b"-"


def test_bad_options_are_one_line_usage_errors(tmp_path):
    for overrides, message in (({"transport": "relp"}, "transport"), ({"address": "host:99999"}, "port"),
                               ({"address": "[::1"}, "address"), ({"facility": "local9"}, "facility"),
                               ({"severities": (3, 4, 9)}, "severities"),
                               ({"transport": "tls", "tls_ca_file": str(tmp_path / "missing.pem")}, "not readable")):
        with pytest.raises(UsageError, match=message) as caught:
            SyslogSink(sink_options(tmp_path, 514, **{"transport": "tcp", **overrides}))
        assert "\n" not in str(caught.value)


def test_addresses():
    assert parse_address("logs.example:6514", 514) == ("logs.example", 6514)
    assert parse_address("[::1]:601", 514) == ("::1", 601)
    assert parse_address("::1", 514) == ("::1", 514)
    assert parse_address("10.1.2.3", 6514) == ("10.1.2.3", 6514)


# -- against rsyslogd -----------------------------------------------------------------------------------

def emit_paced(sink: SyslogSink, events: list[dict], every: int = 10, pause: float = 0.005) -> None:
    """Emit like a pipeline would, in small bursts, so the sender runs between them."""
    for i, event in enumerate(events, 1):
        sink.emit(event)
        if i % every == 0:
            time.sleep(pause)


def test_tcp_every_alert_arrives_although_rsyslogd_is_killed_mid_run(tmp_path, rsyslog_factory):
    receiver = rsyslog_factory("tcp")
    receiver.start()
    events = alert_events(600)
    sink = SyslogSink(sink_options(tmp_path, receiver.port, "tcp"))

    for event in events[:150]:                    # a burst, then the kill while it is still being taken in
        sink.emit(event)
    assert receiver.wait_for(1)
    receiver.kill()                               # SIGKILL: whatever rsyslogd held but had not written is gone
    written_before_kill = len(receiver.records())
    emit_paced(sink, events[150:400])             # the agent keeps going while the receiver is away
    deadline = time.monotonic() + WAIT
    while sink.stats().retries < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    down = sink.stats()
    assert down.queue_depth >= 250 and down.retries >= 1 and down.last_error
    receiver.start()                              # same port, same output file
    emit_paced(sink, events[400:])
    sink.close()                                  # drains (bounded by drain_timeout), then confirms by closing

    stats = sink.stats()
    received = [r["event"]["flow_id"] for r in receiver.records()]
    emitted = [e["flow_id"] for e in events]
    assert set(received) == set(emitted)                                  # every alert arrived
    assert list(dict.fromkeys(received)) == emitted                       # first arrivals in emit order
    assert stats.queue_depth == 0 and stats.sent >= len(events) and stats.dropped == 0
    duplicates = len(received) - len(set(received))
    print(f"tcp kill/restart: {len(events)} alerts, {written_before_kill} written before the kill, "
          f"{len(received)} received, {duplicates} duplicates, {stats.retries} retries")


def test_tcp_fields_as_rsyslog_parses_them(tmp_path, rsyslog_factory):
    receiver = rsyslog_factory("tcp")
    receiver.start()
    events = alert_events(3, severity=1) + alert_events(3, severity=3, first_port=30_000)
    flow_event = {key: value for key, value in events[0].items() if key not in ("alert", "classification")}
    flow_event["event_type"] = "flow"
    sink = SyslogSink(sink_options(tmp_path, receiver.port, "tcp", facility="local3", hostname="sensor-1",
                                   event_types=("alert", "flow")))
    for event in [*events, flow_event]:
        sink.emit(event)
    sink.close()
    got = receiver.wait_for(7)
    assert [r["event"] for r in got] == [*events, flow_event]
    assert [r["severity"] for r in got] == [3, 3, 3, 5, 5, 5, 6]
    assert {(r["facility"], r["hostname"], r["app"], r["sd"]) for r in got} == {(19, "sensor-1", "egresswatch", "-")}
    assert [r["msgid"] for r in got] == ["alert"] * 6 + ["flow"]


def test_only_configured_event_types_are_sent(tmp_path, rsyslog_factory):
    receiver = rsyslog_factory("tcp")
    receiver.start()
    alerts = alert_events(4)
    sink = SyslogSink(sink_options(tmp_path, receiver.port, "tcp"))
    for alert in alerts:
        sink.emit({**alert, "event_type": "flow"})
        sink.emit(alert)
    sink.close()
    assert [r["event"] for r in receiver.wait_for(4)] == alerts
    assert sink.stats().sent == 4


def test_udp_best_effort_on_loopback(tmp_path, rsyslog_factory):
    receiver = rsyslog_factory("udp")
    receiver.start()
    events = alert_events(50)
    sink = SyslogSink(sink_options(tmp_path, receiver.port, "udp"))
    emit_paced(sink, events)
    sink.close()
    got = receiver.wait_for(50)
    # Nothing confirms a datagram; on loopback with a listening receiver none were lost in our runs.
    assert [r["event"] for r in got] == events
    assert sink.stats().sent == 50 and sink.stats().queue_depth == 0


# -- TLS --------------------------------------------------------------------------------------------------

def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    directory.mkdir(exist_ok=True)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(subject: str, key, issuer_name, issuer_key, *, ca: bool, usage=None, san=None):
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                            critical=True)
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                            critical=False)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    paths = {}

    def save(label: str, key, cert) -> None:
        paths[f"{label}_key"] = directory / f"{label}.key"
        paths[f"{label}_cert"] = directory / f"{label}.pem"
        paths[f"{label}_key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        paths[f"{label}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue("egresswatch test CA", ca_key, name("egresswatch test CA"), ca_key, ca=True)
    save("ca", ca_key, ca_cert)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    save("server", server_key, issue("localhost", server_key, ca_cert.subject, ca_key, ca=False,
                                     usage=ExtendedKeyUsageOID.SERVER_AUTH, san=server_names))
    client_key = ec.generate_private_key(ec.SECP256R1())
    save("client", client_key, issue("egresswatch sensor", client_key, ca_cert.subject, ca_key, ca=False,
                                     usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    return paths


@pytest.fixture
def tls_receiver(tmp_path, rsyslog_factory):
    pytest.importorskip("cryptography", reason="the cryptography package (a test dependency) makes the certificates")
    pki = make_pki(tmp_path / "pki")
    receiver = rsyslog_factory("tcp", {"ca": pki["ca_cert"], "cert": pki["server_cert"], "key": pki["server_key"]})
    ok, output = receiver.config_ok()
    if not ok:
        pytest.skip(f"rsyslog's ossl TLS driver is not usable (Debian package rsyslog-openssl): {output[-200:]}")
    receiver.start()
    return receiver, pki


def test_tls_with_verified_server_and_client_certificate(tmp_path, tls_receiver):
    receiver, pki = tls_receiver
    events = alert_events(40)
    sink = SyslogSink(sink_options(tmp_path, receiver.port, "tls", tls_ca_file=str(pki["ca_cert"]),
                                   tls_cert_file=str(pki["client_cert"]), tls_key_file=str(pki["client_key"]),
                                   tls_server_name="localhost"))
    emit_paced(sink, events)
    sink.close()
    assert [r["event"] for r in receiver.wait_for(40)] == events
    stats = sink.stats()
    assert stats.sent == 40 and stats.queue_depth == 0 and stats.retries == 0


def test_tls_server_name_mismatch_sends_nothing_and_keeps_every_event(tmp_path, tls_receiver):
    receiver, pki = tls_receiver
    events = alert_events(5)
    sink = SyslogSink(sink_options(tmp_path, receiver.port, "tls", tls_ca_file=str(pki["ca_cert"]),
                                   tls_cert_file=str(pki["client_cert"]), tls_key_file=str(pki["client_key"]),
                                   tls_server_name="not-the-receiver.example", drain_timeout=0.5))
    for event in events:
        sink.emit(event)
    deadline = time.monotonic() + WAIT
    while sink.stats().retries < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    sink.close()
    stats = sink.stats()
    assert stats.retries >= 2 and "TLS handshake failed" in stats.last_error
    assert stats.sent == 0 and stats.queue_depth == 5
    assert receiver.records() == []
    # The next start (right name) delivers what the first one kept.
    again = SyslogSink(sink_options(tmp_path, receiver.port, "tls", tls_ca_file=str(pki["ca_cert"]),
                                    tls_cert_file=str(pki["client_cert"]), tls_key_file=str(pki["client_key"]),
                                    tls_server_name="localhost"))
    again.close()
    assert [r["event"] for r in receiver.wait_for(5)] == events

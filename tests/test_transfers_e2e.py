"""Destination register end to end: covered transfers are recorded but not alerted, expired and
denied ones raise the severity; host names come from DNS answers seen earlier on the wire; the
register reloads; alerts also reach a webhook given on the command line."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.test_classification_e2e import INSIDE, post, replay, rid, tcp_conversation

T0 = 1_767_225_600.0                  # 2026-01-01, the date the register is judged at
COVERED, EXPIRED, DENIED, BY_NAME = "93.184.216.34", "93.184.216.35", "5.9.10.10", "5.9.20.20"
RESOLVER = "10.20.0.53"               # an inside resolver: the answer never crosses the boundary


def _upload(server: str, cport: int, rng: random.Random, t0: float) -> list:
    body = ("\n".join(rid(rng) for _ in range(3))).encode()
    return tcp_conversation(INSIDE, server, cport, [post(body, "text/plain")], [b"HTTP/1.1 200 OK\r\n\r\n"], t0=t0)


def _udp_answer(name: str, address: str, *, resolver: str = RESOLVER, client_port: int = 53000):
    """A DNS answer over UDP from `resolver` to the inside client, sent one second before T0."""
    answer = (Ether() / IP(src=resolver, dst=INSIDE) / UDP(sport=53, dport=client_port)
              / DNS(id=1, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, type="A", rdata=address, ttl=300)))
    answer.time = T0 - 1
    return answer


def _capture() -> list:
    rng = random.Random(7)
    packets = [_udp_answer("files.partner.example", BY_NAME)]
    for n, server in enumerate((COVERED, EXPIRED, DENIED, BY_NAME)):
        packets += _upload(server, 41000 + n, rng, T0 + n)
    return packets


REGISTER = f"""
version: 1
destinations:
  - name: covered-processor
    cidrs: [{COVERED}/32]
    basis: security_assessment
    approved: 2025-01-01
    valid_until: 2027-12-31
  - name: lapsed-contract
    cidrs: [{EXPIRED}/32]
    basis: standard_contract
    filed: 2023-01-01
    expires: 2025-06-30
  - name: listed-entity
    cidrs: [5.9.10.0/24]
    deny: true
    reason: PIPL Art. 42 list
  - name: partner-by-name
    hosts: ["*.partner.example"]
    deny: true
    reason: not approved by legal
"""


def _by_dest(events: list[dict], event_type: str) -> dict[str, dict]:
    return {e["dest_ip"]: e for e in events if e["event_type"] == event_type}


def test_register_statuses_severity_and_passive_dns_names(tmp_path: Path):
    register = tmp_path / "register.yaml"
    register.write_text(REGISTER)
    events, _ = replay(tmp_path, _capture(), "--register", str(register))
    flows, alerts = _by_dest(events, "flow"), _by_dest(events, "alert")
    assert flows[COVERED]["transfer"] == {"basis": "security_assessment", "valid_until": "2027-12-31",
                                          "status": "covered", "entry": "covered-processor"}
    assert COVERED not in alerts                                  # recorded, not alerted
    assert flows[EXPIRED]["transfer"]["status"] == "expired"
    assert alerts[EXPIRED]["alert"]["severity"] == flows[EXPIRED]["classification"]["severity"] - 1
    assert alerts[DENIED]["transfer"]["status"] == "denied" and alerts[DENIED]["alert"]["severity"] == 1
    # No SNI, no Host match: the name comes from the DNS answer the inside resolver gave.
    assert alerts[BY_NAME]["transfer"]["entry"] == "partner-by-name"
    assert alerts[BY_NAME]["alert"]["severity"] == 1

    covered_too, _ = replay(tmp_path, _capture(), "--register", str(register), "--config",
                            str(_config(tmp_path, "alert_covered = true\n")))
    assert COVERED in _by_dest(covered_too, "alert")

    plain, _ = replay(tmp_path, _capture())
    assert {e["transfer"]["status"] for e in plain if e["event_type"] == "flow"} == {"none"}
    assert len(_by_dest(plain, "alert")) == 4


def test_bad_register_is_a_one_line_usage_error(tmp_path: Path):
    import subprocess
    import sys

    from tests.streams import PROJECT_ROOT
    register = tmp_path / "register.yaml"
    register.write_text("version: 1\ndestinations:\n  - name: x\n    cidrs: [10.0.0.1/8]\n    basis: certification\n")
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(PROJECT_ROOT / "samples" /
                             "sample-egress.pcap"), "--register", str(register)], capture_output=True, text=True,
                            timeout=120, cwd=PROJECT_ROOT)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr
    assert str(register) in result.stderr.strip().splitlines()[-1]


def test_pipeline_reload_swaps_the_register(tmp_path: Path):
    from agent.config import load
    from agent.pipeline import Pipeline
    from agent.stats import Stats

    register = tmp_path / "register.yaml"
    register.write_text(REGISTER)
    pipeline = Pipeline(load(None, {}, {"register": str(register)}), [], Stats())
    before = pipeline.register
    register.write_text("version: 1\ndestinations: []\n")
    pipeline.reload()
    assert pipeline.register is not before and len(pipeline.register) == 0
    register.write_text("not: [valid")
    pipeline.reload()                                   # refused: the current register stays
    assert len(pipeline.register) == 0


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra.toml"
    path.write_text(text)
    return path


def test_alerts_reach_a_webhook_given_on_the_command_line(tmp_path: Path):
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:   # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = _config(tmp_path, f'[webhook]\nspool_dir = "{tmp_path / "spool"}"\n')
        events, _ = replay(tmp_path, _capture(), "--config", str(config),
                           "--webhook", f"http://127.0.0.1:{server.server_port}/alerts")
    finally:
        server.shutdown()
        server.server_close()
    alerts = [e for e in events if e["event_type"] == "alert"]
    assert len(alerts) == 4
    assert sorted(json.dumps(a, sort_keys=True) for a in received) == sorted(json.dumps(a, sort_keys=True) for a in alerts)


def test_dns_answers_are_parsed_only_when_a_register_matches_host_names(tmp_path: Path):
    """Passive DNS feeds register lookups by name and nothing else: without a register that names
    hosts (none at all, or CIDR entries only) no DNS answer is parsed; with one, the answer of
    the capture is remembered for its address."""
    from scapy.utils import wrpcap

    from agent.config import load
    from agent.pipeline import Pipeline, open_captures
    from agent.stats import Stats

    pcap = tmp_path / "in.pcap"
    wrpcap(str(pcap), _capture())
    cidrs_only = tmp_path / "cidrs.yaml"
    cidrs_only.write_text(REGISTER.split("  - name: partner-by-name")[0])
    by_name = tmp_path / "register.yaml"
    by_name.write_text(REGISTER)
    remembered = {}
    for label, options in (("none", {}), ("cidrs", {"register": str(cidrs_only)}),
                           ("hosts", {"register": str(by_name)})):
        pipeline = Pipeline(load(None, {}, options), [], Stats())
        pipeline.replay(open_captures([str(pcap)]))
        assert pipeline.passive_dns is not None
        remembered[label] = (pipeline.passive_dns.responses,
                             pipeline.passive_dns.names(bytes(map(int, BY_NAME.split("."))), int(T0 * 1e6)))
    assert remembered == {"none": (0, ()), "cidrs": (0, ()), "hosts": (1, ("files.partner.example",))}


def _upload_to_host(host: bytes, seed: int) -> bytes:
    """A POST of three resident ID numbers with this Host header."""
    rng = random.Random(seed)
    body = "\n".join(rid(rng) for _ in range(3)).encode()
    return (b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
            % (host, len(body))) + body


def test_http_host_names_the_destination_for_the_register_and_the_events(tmp_path: Path):
    """No SNI and no DNS answer for the address: the Host header of the request names it."""
    register = tmp_path / "register.yaml"
    register.write_text(REGISTER)
    request = _upload_to_host(b"Upload.Partner.Example.:8080", seed=11)
    by_host = "5.9.30.30"
    packets = tcp_conversation(INSIDE, by_host, 42000, [request], [b"HTTP/1.1 200 OK\r\n\r\n"], t0=T0)
    events, _ = replay(tmp_path, packets, "--register", str(register))
    flow, alert = _by_dest(events, "flow")[by_host], _by_dest(events, "alert")[by_host]
    assert flow["http"] == {"hostname": "upload.partner.example"} == alert["http"]
    assert alert["transfer"]["entry"] == "partner-by-name" and alert["transfer"]["status"] == "denied"
    # Without the header the same upload matches nothing.
    bare = request.replace(b"Host: Upload.Partner.Example.:8080\r\n", b"")
    events, _ = replay(tmp_path, tcp_conversation(INSIDE, by_host, 42000, [bare], [b"HTTP/1.1 200 OK\r\n\r\n"], t0=T0),
                       "--register", str(register))
    assert "http" not in _by_dest(events, "flow")[by_host]
    assert _by_dest(events, "alert")[by_host]["transfer"]["status"] == "none"


def test_dns_answers_reach_a_register_that_starts_matching_names_on_reload(tmp_path: Path):
    """A DNS flow open before SIGHUP: its answer after the reload still feeds passive DNS."""
    from agent.config import load
    from agent.pipeline import Pipeline
    from agent.stats import Stats

    register = tmp_path / "register.yaml"
    register.write_text("version: 1\ndestinations: []\n")
    pipeline = Pipeline(load(None, {}, {"register": str(register)}), [], Stats())
    query = (Ether() / IP(src=INSIDE, dst=RESOLVER) / UDP(sport=53000, dport=53)
             / DNS(id=1, qd=DNSQR(qname="files.partner.example")))
    answer = _udp_answer("files.partner.example", BY_NAME)
    t0 = int(T0 * 1e6)
    # Query and answer before the reload (not needed then), the same again after it: by then
    # the flow is established, and only a flow marked for passive DNS leaves the fast path.
    pipeline.run_frames([(t0, 1, memoryview(bytes(query))), (t0 + 1000, 1, memoryview(bytes(answer)))])
    register.write_text(REGISTER)
    pipeline.reload()
    pipeline.run_frames([(t0 + 2000, 1, memoryview(bytes(query))), (t0 + 3000, 1, memoryview(bytes(answer)))])
    assert pipeline.passive_dns is not None
    assert pipeline.passive_dns.names(bytes(map(int, BY_NAME.split("."))), t0 + 4000) == ("files.partner.example",)


def test_a_claimed_name_never_covers_a_transfer_but_a_dns_answer_does(tmp_path: Path):
    """SNI and Host are the client's word: naming a covered partner does not silence the alert;
    the same name given to that address by a DNS answer seen on the wire does."""
    register = tmp_path / "register.yaml"
    register.write_text("version: 1\ndestinations:\n  - name: trusted-by-name\n    hosts: ['*.trusted.example']\n"
                        "    basis: standard_contract\n    filed: 2025-01-01\n")
    request = _upload_to_host(b"upload.trusted.example", seed=12)
    server = "5.9.40.40"
    upload = tcp_conversation(INSIDE, server, 42001, [request], [b"HTTP/1.1 200 OK\r\n\r\n"], t0=T0)
    events, _ = replay(tmp_path, upload, "--register", str(register))
    assert _by_dest(events, "flow")[server]["transfer"]["status"] == "none"
    assert server in _by_dest(events, "alert")                      # claimed, not covered: alerted
    answer = _udp_answer("upload.trusted.example", server, client_port=53001)
    events, _ = replay(tmp_path, [answer] + upload, "--register", str(register))
    assert _by_dest(events, "flow")[server]["transfer"]["entry"] == "trusted-by-name"
    assert _by_dest(events, "flow")[server]["transfer"]["status"] == "covered"
    assert server not in _by_dest(events, "alert")


def test_a_name_in_an_ingress_flow_names_the_inside_server_not_the_outside_party(tmp_path: Path):
    """An outside client uploads to an inside server with a Host the register denies: that
    name is the inside server's, so the outside party's verdict does not come from it."""
    register = tmp_path / "register.yaml"
    register.write_text(REGISTER)
    client = "5.9.50.50"
    request = b"GET /export HTTP/1.1\r\nHost: intranet.partner.example\r\n\r\n"
    rng = random.Random(13)
    body = "\n".join(rid(rng) for _ in range(3)).encode()
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    packets = tcp_conversation(client, INSIDE, 43000, [request], [response], t0=T0)
    events, _ = replay(tmp_path, packets, "--register", str(register))
    flow = next(e for e in events if e["event_type"] == "flow" and e["src_ip"] == client)
    assert flow["direction"] == "ingress" and flow["transfer"]["status"] == "none"
    egress, _ = replay(tmp_path, tcp_conversation(INSIDE, client, 43001, [post(body, "text/plain").replace(
        b"Host: collect.example.net", b"Host: intranet.partner.example")], [b"HTTP/1.1 200 OK\r\n\r\n"], t0=T0),
        "--register", str(register))
    assert _by_dest(egress, "flow")[client]["transfer"]["status"] == "denied"     # the same name, egress


def _framed(message: DNS) -> bytes:
    data = bytes(message)
    return len(data).to_bytes(2, "big") + data


def _dns_over_tcp_then_upload(resolver: str, *, hole: bool = False) -> list:
    """Two DNS answers over TCP (RFC 7766 framing), the second naming the upload's address and cut
    so that its length prefix and body span segments; then the upload. `hole`: the segment with
    the first answer is missing, so what follows would still parse if the hole were ignored."""
    other = _framed(DNS(id=2, qr=1, qd=DNSQR(qname="other.example"),
                        an=DNSRR(rrname="other.example", type="A", rdata="192.0.2.1", ttl=300)))
    answer = _framed(DNS(id=3, qr=1, qd=DNSQR(qname="files.partner.example"),
                         an=DNSRR(rrname="files.partner.example", type="A", rdata=BY_NAME, ttl=300)))
    pieces = ([] if hole else [other]) + [answer[i:i + 17] for i in range(0, len(answer), 17)]
    query = _framed(DNS(id=3, qd=DNSQR(qname="files.partner.example")))
    packets = tcp_conversation(INSIDE, resolver, 53001, [query], pieces, t0=T0 - 5, port=53)
    if hole:        # the answers' sequence numbers start after the missing first one
        from scapy.layers.inet import TCP
        for packet in packets:
            if packet[IP].src == resolver and packet[TCP].flags != "SA":
                packet[TCP].seq += len(other)
    return packets + _upload(BY_NAME, 41003, random.Random(7), T0)


def test_dns_answers_over_tcp_name_a_destination(tmp_path: Path):
    register = tmp_path / "register.yaml"
    register.write_text(REGISTER)
    events, _ = replay(tmp_path, _dns_over_tcp_then_upload(RESOLVER), "--register", str(register))
    alert = _by_dest(events, "alert")[BY_NAME]
    assert alert["transfer"]["entry"] == "partner-by-name" and alert["transfer"]["status"] == "denied"
    # A hole in the answers: the framing after it is unknown, so nothing is taken from them.
    events, _ = replay(tmp_path, _dns_over_tcp_then_upload(RESOLVER, hole=True), "--register", str(register))
    assert _by_dest(events, "alert")[BY_NAME]["transfer"]["status"] == "none"


def test_answers_of_an_outside_dns_server_name_nothing(tmp_path: Path):
    """Anyone can run a server on port 53 outside and have it answer a partner's name with their
    own address: only inside resolvers name destinations, over UDP as over TCP."""
    register = tmp_path / "register.yaml"
    register.write_text(REGISTER)
    outside = "5.9.40.53"
    events, _ = replay(tmp_path, _dns_over_tcp_then_upload(outside), "--register", str(register))
    assert _by_dest(events, "alert")[BY_NAME]["transfer"]["status"] == "none"
    udp = [p for p in _capture() if not p.haslayer(DNS)]
    answer = _udp_answer("files.partner.example", BY_NAME, resolver=outside)
    events, _ = replay(tmp_path, [answer] + udp, "--register", str(register))
    assert _by_dest(events, "alert")[BY_NAME]["transfer"]["status"] == "none"


def test_every_replay_worker_reads_every_dns_answer(tmp_path: Path):
    """The answer and the upload are different address pairs, so usually different workers: the
    name must reach the upload's worker all the same (output identical to one worker)."""
    register = tmp_path / "register.yaml"
    register.write_text(REGISTER)
    outputs = {}
    for workers in ("1", "2", "3"):
        events, _ = replay(tmp_path, _capture(), "--register", str(register), "--workers", workers)
        assert _by_dest(events, "alert")[BY_NAME]["transfer"]["entry"] == "partner-by-name", workers
        outputs[workers] = sorted(json.dumps(e, sort_keys=True) for e in events)
    assert outputs["1"] == outputs["2"] == outputs["3"]


def test_tcp_dns_flows_are_reassembled_only_while_their_answers_are_read(tmp_path: Path):
    """No register reading names: an inside TCP/53 flow is only counted (no reassembly, the fast
    path). With one: reassembled, and bypassed as soon as its answers are no longer read (here
    the register stops matching names on reload); every byte held is back in the memcap."""
    from agent.config import load
    from agent.pipeline import Pipeline
    from agent.stats import Stats

    by_name = tmp_path / "register.yaml"
    by_name.write_text(REGISTER)
    seen = {}
    for label, options, hole in (("none", {}, False), ("hosts", {"register": str(by_name)}, False),
                                 ("hosts, hole", {"register": str(by_name)}, True),
                                 ("hosts, then none", {"register": str(by_name)}, False)):
        by_name.write_text(REGISTER)
        frames = [(int(p.time * 1e6), 1, memoryview(bytes(p))) for p in _dns_over_tcp_then_upload(RESOLVER, hole=hole)]
        pipeline = Pipeline(load(None, {}, options), [], Stats())
        pipeline.run_frames(frames[:4])           # handshake and query
        dns_flow = next(f for q in pipeline.flows.queues.values() for f in q if f.sport == 53)
        before = dns_flow.streams is not None
        if label == "hosts, then none":
            by_name.write_text(REGISTER.split("  - name: partner-by-name")[0])
            pipeline.reload()
        pipeline.run_frames(frames[4:6])          # the first answer segments
        during = dns_flow.streams is not None
        pipeline.run_frames(frames[6:])
        pipeline.finish()
        seen[label] = (before, during, pipeline.flows.budget.used, pipeline.stats.anomalies["dns.tcp_framing_lost"])
    assert seen == {"none": (False, False, 0, 0), "hosts": (True, True, 0, 0), "hosts, hole": (True, True, 0, 1),
                    "hosts, then none": (True, False, 0, 0)}

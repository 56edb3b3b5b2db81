"""FTP: control-channel parsing, the data-channel registry, and data flows tied to their control
flow — on scapy-built captures of active (PORT, EPRT) and passive (PASV, EPSV) sessions."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap
from stdnum.cn import ric

from agent.apps.ftp import FtpDataInfo, FtpDataRegistry, FtpExpectation, FtpParser, mask_filename
from agent.apps.session import AppSession
from agent.capture.pcapfile import CaptureFile
from agent.decode import Decoder
from agent.defrag import Defragmenter
from agent.flows import Flow, FlowLimits, FlowTable
from agent.reassembly import TOCLIENT, TOSERVER
from classifiers.engine import Engine
from classifiers.findings import FindingLimits, Findings
from tests.agent.parser_feed import feed_all
from tests.streams import CORPUS, CORPUS_MISSING

CLIENT, SERVER = "10.0.0.5", "198.51.100.10"     # inside client, outside FTP server
BODY = "11010519900307123"
RID = BODY + ric.calc_check_digit(BODY + "0")
UPLOAD = f"name,id,mobile\r\nZhang San,{RID},13912345678\r\nLi Si,-,13812345678\r\n".encode()
UPLOAD_NAME = f"customers_{RID}.csv"


class Conn:
    """One scapy TCP connection: handshake, data either way with exact seq/ack, FIN teardown."""

    def __init__(self, out: list[Packet], clock: list[float], src: str, sport: int, dst: str, dport: int) -> None:
        self.out, self.clock = out, clock
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.seq = [1000 + sport, 5000 + dport]          # next seq per direction
        self._send(0, "S", b"")
        self.seq[0] += 1
        self._send(1, "SA", b"")
        self.seq[1] += 1
        self._send(0, "A", b"")

    def _send(self, direction: int, flags: str, payload: bytes) -> None:
        a, b = (self.src, self.dst) if direction == 0 else (self.dst, self.src)
        ap, bp = (self.sport, self.dport) if direction == 0 else (self.dport, self.sport)
        ip = IPv6(src=a, dst=b) if ":" in a else IP(src=a, dst=b)
        ack = self.seq[1 - direction] if "A" in flags else 0
        pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / TCP(sport=ap, dport=bp, flags=flags, seq=self.seq[direction], ack=ack)
        if payload:
            pkt = pkt / Raw(payload)
        self.clock[0] += 0.001
        pkt.time = self.clock[0]
        self.out.append(pkt)

    def send(self, direction: int, payload: bytes) -> None:
        for at in range(0, len(payload), 1400):
            piece = payload[at:at + 1400]
            self._send(direction, "PA", piece)
            self.seq[direction] += len(piece)
        self._send(1 - direction, "A", b"")

    def close(self) -> None:
        self._send(0, "FA", b"")
        self.seq[0] += 1
        self._send(1, "FA", b"")
        self.seq[1] += 1
        self._send(0, "A", b"")


def session_packets(client: str = CLIENT, server: str = SERVER) -> list[Packet]:
    """Login, then four transfers: PASV+STOR (connect before STOR, as ftplib does), PORT+RETR,
    EPSV+APPE, EPRT+LIST."""
    out: list[Packet] = []
    clock = [1767225600.0]
    v6 = ":" in client
    ctl = Conn(out, clock, client, 40001, server, 21)
    ctl.send(1, b"220 (vsFTPd 3.0.5)\r\n")
    for command, reply in ((b"USER alice@example.org", b"331 Please specify the password."),
                           (b"PASS s3cret-13700000000", b"230 Login successful."), (b"TYPE I", b"200 Switching to Binary mode.")):
        ctl.send(0, command + b"\r\n")
        ctl.send(1, reply + b"\r\n")
    # passive, IPv4 227 (or IPv6 229), data connection opened before STOR
    if v6:
        ctl.send(0, b"EPSV\r\n")
        ctl.send(1, b"229 Entering Extended Passive Mode (|||50000|)\r\n")
    else:
        ctl.send(0, b"PASV\r\n")
        ctl.send(1, b"227 Entering Passive Mode (198,51,100,10,195,80).\r\n")
    data = Conn(out, clock, client, 40002, server, 50000)
    ctl.send(0, b"STOR " + UPLOAD_NAME.encode() + b"\r\n")
    ctl.send(1, b"150 Ok to send data.\r\n")
    data.send(0, UPLOAD)
    data.close()
    ctl.send(1, b"226 Transfer complete.\r\n")
    # active: the server connects back from port 20
    if v6:
        ctl.send(0, b"EPRT |2|" + client.encode() + b"|40100|\r\n")
    else:
        ctl.send(0, b"PORT 10,0,0,5,156,164\r\n")
    ctl.send(1, b"200 PORT command successful.\r\n")
    ctl.send(0, b"RETR report-2025.pdf\r\n")
    data = Conn(out, clock, server, 20, client, 40100)
    ctl.send(1, b"150 Opening BINARY mode data connection.\r\n")
    data.send(0, b"%PDF-1.7 downloaded bytes 13600000000\n")
    data.close()
    ctl.send(1, b"226 Transfer complete.\r\n")
    # extended passive, upload by APPE
    ctl.send(0, b"EPSV\r\n")
    ctl.send(1, b"229 Entering Extended Passive Mode (|||50001|)\r\n")
    ctl.send(0, b"APPE notes.txt\r\n")
    data = Conn(out, clock, client, 40003, server, 50001)
    data.send(0, b"call back 13912345679\n")
    data.close()
    # extended active, listing
    ctl.send(0, b"EPRT |%s|%s|40200|\r\n" % (b"2" if v6 else b"1", client.encode()))
    ctl.send(1, b"200 EPRT command successful.\r\n")
    ctl.send(0, b"LIST\r\n")
    data = Conn(out, clock, server, 20, client, 40200)
    data.send(0, b"-rw-r--r-- 1 ftp ftp 120 Jan 01 00:00 notes.txt\r\n")
    data.close()
    ctl.send(0, b"QUIT\r\n")
    ctl.send(1, b"221 Goodbye.\r\n")
    ctl.close()
    return out


def control_items(packets: list[Packet]) -> list[tuple[int, bytes]]:
    """The control connection's payloads in capture order, as (direction, bytes)."""
    items = []
    for pkt in packets:
        tcp = pkt[TCP]
        if 21 in (tcp.sport, tcp.dport) and len(tcp.payload):
            items.append((TOSERVER if tcp.dport == 21 else TOCLIENT, bytes(tcp.payload)))
    return items


# -- the parser ------------------------------------------------------------------------------

def parse(items: list[tuple[int, bytes]]) -> tuple[list, list[FtpExpectation], Counter[str]]:
    anomalies: Counter[str] = Counter()
    parser = FtpParser(anomalies)
    announced: list[FtpExpectation] = []
    parser.on_expect = announced.append
    chunks = feed_all(parser, items)
    return chunks, announced, anomalies


def test_parser_announces_every_channel_with_its_transfer() -> None:
    chunks, announced, anomalies = parse(control_items(session_packets()))
    assert not anomalies
    got = [(e.mode, e.host and str(ipaddress.ip_address(e.host)), e.port, e.info.command, e.info.direction,
            e.info.filename) for e in announced]
    assert got == [("passive", SERVER, 50000, "STOR", "upload", UPLOAD_NAME),
                   ("active", CLIENT, 40100, "RETR", "download", "report-2025.pdf"),
                   ("passive", None, 50001, "APPE", "upload", "notes.txt"),
                   ("active", CLIENT, 40200, "LIST", "listing", None)]
    args = [c.data for c in chunks]
    assert b"alice@example.org\n" in args and (UPLOAD_NAME + "\n").encode() in args
    assert not any(b"s3cret" in a for a in args)            # PASS is never emitted
    assert all(c.direction == TOSERVER and c.kind == "ftp.command" for c in chunks)
    assert len({c.part for c in chunks}) == len(chunks)      # one text per command


def test_parser_same_result_whatever_the_split() -> None:
    stream_items = control_items(session_packets())
    want = parse(stream_items)
    for size in (1, 3, 7):
        pieces = [(d, data[i:i + size]) for d, data in stream_items for i in range(0, len(data), size)]
        got = parse(pieces)
        assert [c.data for c in got[0]] == [c.data for c in want[0]]
        assert [(e.mode, e.host, e.port, e.info) for e in got[1]] == [(e.mode, e.host, e.port, e.info) for e in want[1]]


def test_parser_bad_lines_and_gaps() -> None:
    items: list = [(TOSERVER, b"PORT 10,0,0,300,1,2\r\n"), (TOSERVER, b"EPRT |9|x|1|\r\n"),
                   (TOCLIENT, b"227 Entering Passive Mode (no numbers)\r\n"), (TOSERVER, b"\x00\x01binary\r\n"),
                   (TOSERVER, b"STOR x"), ("gap", TOSERVER, 100), (TOSERVER, b"rest of line\r\nNOOP\r\n"),
                   (TOSERVER, b"A" * 5000 + b"\r\nPASV\r\n"), (TOCLIENT, b"229 Extended (|||2121|)\r\n")]
    chunks, announced, anomalies = parse(items)
    assert anomalies == Counter({"app.ftp.parse_error": 4, "app.ftp.gap": 1})
    assert [(e.mode, e.port) for e in announced] == [("passive", 2121)]
    assert [c.data for c in chunks] == [b"10,0,0,300,1,2\n", b"|9|x|1|\n"]


def test_filenames_are_masked_in_events() -> None:
    info = FtpDataInfo("passive", 7, "STOR", f"张三_{RID}_13912345678 alice.wang@example.org.csv", "upload")
    fields = info.event_fields()
    assert fields["filename"] == "张三_" + "*" * 18 + "_" + "*" * 11 + " ***@example.org.csv"
    assert RID not in str(fields) and "13912345678" not in str(fields)
    assert mask_filename("report-2025.pdf") == "report-2025.pdf"


# -- the registry ----------------------------------------------------------------------------

A, B, C = (ipaddress.ip_address(x).packed for x in ("10.0.0.5", "198.51.100.10", "10.0.0.6"))


def test_registry_claims_once_and_only_the_expected_connector() -> None:
    reg = FtpDataRegistry(Counter())
    info = FtpDataInfo("passive")
    reg.expect(A, B, 50000, 1_000_000, info)
    assert reg.claim(C, B, 50000, 40000, 1_100_000) is None          # someone else
    assert reg.claim(A, B, 50001, 40000, 1_100_000) is None          # another port
    assert reg.claim(A, B, 50000, 40000, 1_100_000) is info
    assert reg.claim(A, B, 50000, 40001, 1_200_000) is None          # one transfer per channel
    assert len(reg) == 0


def test_registry_expires_by_packet_time_and_is_bounded() -> None:
    anomalies: Counter[str] = Counter()
    reg = FtpDataRegistry(anomalies, max_entries=100, timeout_us=30_000_000)
    reg.expect(A, B, 50000, 0, FtpDataInfo("passive"))
    assert reg.claim(A, B, 50000, 1, 30_000_001) is None
    assert anomalies["app.ftp.data_unclaimed"] == 1
    for port in range(1000, 1300):                                   # a client looping on PASV
        reg.expect(A, B, port, 40_000_000 + port, FtpDataInfo("passive"))
    assert len(reg) == 100 and anomalies["limit.ftp_expectations"] == 200
    assert reg.claim(A, B, 1299, 2, 40_002_000) is not None and reg.claim(A, B, 1000, 2, 40_002_000) is None


class _Flow:
    def __init__(self, client: bytes, server: bytes, flow_id: int, last: int) -> None:
        self.client, self.server, self.flow_id, self.last = client, server, flow_id, last


def test_expecter_registers_the_announced_and_the_control_address_once() -> None:
    """A server behind NAT announces its private address; the client connects to either."""
    anomalies: Counter[str] = Counter()
    reg = FtpDataRegistry(anomalies)
    private = ipaddress.ip_address("192.168.7.7").packed
    expect = reg.expecter(_Flow(A, B, 42, 5_000_000))
    for connect_to in (private, B):
        info = FtpDataInfo("passive")
        expect(FtpExpectation("passive", private, 50010, info))
        assert len(reg) == 2 and info.control_flow_id == 42
        assert reg.claim(A, connect_to, 50010, 40000, 5_100_000) is info
        other = private if connect_to == B else B
        assert reg.claim(A, other, 50010, 40001, 5_100_000) is None     # the same channel: taken
    info = FtpDataInfo("active")
    expect(FtpExpectation("active", None, 40100, info))               # EPRT-like: the control address
    assert reg.claim(B, A, 40100, 20, 5_200_000) is info
    assert not anomalies


# -- data flows tied to their control flow (what the pipeline does with these pieces) -------------

@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def replay(path: Path, engine: Engine) -> tuple[list[tuple[Flow, AppSession, Findings]], Counter[str]]:
    """Decode -> flows -> AppSession like agent.pipeline, with the FTP glue the pipeline needs:
    claim on flow creation, expecter for the control parser."""
    anomalies: Counter[str] = Counter()
    registry = FtpDataRegistry(anomalies)
    inside = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    flows: list[tuple[Flow, AppSession, Findings]] = []

    def session_for(flow: Flow) -> AppSession:
        address = ipaddress.ip_address(flow.client)
        client_inside = any(address in net for net in inside if net.version == address.version)
        findings = Findings(FindingLimits(), {}, b"k" * 16)
        session = AppSession(anomalies, TOSERVER if client_inside else TOCLIENT, engine.stream(findings.add),
                             strict=True, ftp_data=registry.claim(flow.client, flow.server, flow.sport, flow.cport,
                                                                  flow.start),
                             ftp_expect=registry.expecter(flow))
        flows.append((flow, session, findings))
        return session

    decoder = Decoder(anomalies, Defragmenter(anomalies))
    table = FlowTable(FlowLimits(), anomalies, session_for)
    with CaptureFile(str(path)) as capture:
        for ts, linktype, data in capture.frames():
            pkt = decoder.decode(ts, linktype, data)
            if pkt is not None:
                table.packet(pkt)
        for flow in table.drain():
            flow.consumer.finish()                      # type: ignore[union-attr]
    return flows, anomalies


@pytest.mark.parametrize("client,server", [(CLIENT, SERVER), ("fd10::5", "2001:db8::10")])
def test_data_flows_are_ftp_data_of_their_control_flow(tmp_path: Path, engine: Engine, client: str, server: str) -> None:
    path = tmp_path / "ftp.pcap"
    wrpcap(str(path), session_packets(client, server))
    flows, anomalies = replay(path, engine)
    assert len(flows) == 5 and not anomalies["app.ftp.parse_error"]
    control_flow, control, control_findings = flows[0]
    assert control.app_proto == "ftp"
    data = [(flow, session, findings) for flow, session, findings in flows[1:]]
    assert [s.event_app_proto() for _, s, _ in data] == ["ftp-data"] * 4
    fields = [s.event_fields()["ftp_data"] for _, s, _ in data]
    assert all(f["control_flow_id"] == control_flow.flow_id for f in fields)
    assert [(f["mode"], f.get("command"), f.get("direction"), f.get("filename")) for f in fields] == [
        ("passive", "STOR", "upload", "customers_" + "*" * 18 + ".csv"),
        ("active", "RETR", "download", "report-2025.pdf"),
        ("passive", "APPE", "upload", "notes.txt"),
        ("active", "LIST", "listing", None)]
    counts = [{c: f.count(c) for c in f.by_class} for _, _, f in data]
    # uploads are scanned (passive: the client's bytes; the inside host sends either way),
    # the download and the listing come in and are not
    assert counts == [{"cn_resident_id": 1, "cn_mobile": 2}, {}, {"cn_mobile": 1}, {}]
    # the control flow: the ID in the file name and the user's address count; PASS does not
    assert {c: control_findings.count(c) for c in control_findings.by_class} == {"cn_resident_id": 1, "email": 1}
    assert not anomalies["app.ftp.data_unclaimed"]


# -- third-party corpus -----------------------------------------------------------------------

CORPUS_FTP = {   # capture -> (mode, command, masked file name) of each data flow, in order
    "sv-ftp-upload-active-input.pcap": [("active", "NLST", None), ("active", "STOR", "index.html"),
                                        ("active", "NLST", None)],
    "sv-ftp-upload-passive-input.pcap": [("passive", "NLST", None), ("passive", "STOR", "index.html"),
                                         ("passive", "NLST", None)],
    "zk-ftp-bigtransfer.pcap": [("passive", "LIST", None), ("passive", "RETR", "rand.txt")],
    "zk-ftp-ipv6.pcap": [("passive", "LIST", None), ("passive", "NLST", None), ("passive", "RETR", "robots.txt"),
                         ("active", "RETR", "robots.txt"), ("active", "LIST", None)],
    "zk-ftp-retr.pcap": [("passive", "RETR", "/README")],
}


@pytest.mark.parametrize("name", sorted(CORPUS_FTP))
def test_corpus_ftp_data_channels(engine: Engine, name: str) -> None:
    path = CORPUS / "ftp" / name
    if not path.is_file():
        pytest.skip(CORPUS_MISSING)
    flows, anomalies = replay(path, engine)
    (control_flow, control, _), data = flows[0], flows[1:]
    assert control.app_proto == "ftp" and not anomalies["app.ftp.parse_error"]
    fields = [s.event_fields().get("ftp_data", {}) for _, s, _ in data]
    assert all(s.app_proto == "ftp-data" for _, s, _ in data)
    assert all(f["control_flow_id"] == control_flow.flow_id for f in fields)
    assert [(f["mode"], f["command"], f.get("filename")) for f in fields] == CORPUS_FTP[name]

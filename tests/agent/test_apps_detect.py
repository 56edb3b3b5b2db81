"""Application protocol detection by content (agent.apps.detect).

Literal first bytes of every recognized protocol, the ambiguities (a bare "220" greeting,
prefixes too short to decide), negatives (random bytes, near misses), a fuzz run, and a
comparison with tshark's dissectors on the TCP streams and DNS datagrams of the third-party
corpus (skipped when the corpus is absent).
"""

from __future__ import annotations

import csv
import functools
import random
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.apps.detect import APP_PROTOS, detect_tcp, detect_udp

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS_MISSING = "third-party pcap corpus not found at ../shared/corpus; see shared/corpus/README.md"

TLS_CLIENT_HELLO_HEAD = bytes.fromhex("16030100e7010000e30303") + bytes(32)
TLS_SERVER_HELLO_HEAD = bytes.fromhex("1603030058020000540303") + bytes(32)
SSLV2_CLIENT_HELLO = bytes.fromhex("802e0100020015000000100700c00500800300800100800600400400800200801c30e2b12f4c")


def dns_query(name: bytes = b"www.example.com", qtype: int = 1, *, flags: int = 0x0100, qd: int = 1,
              ar: bytes = b"") -> bytes:
    qname = b"".join(bytes([len(label)]) + label for label in name.split(b".") if label) + b"\x00"
    return struct.pack("!HHHHHH", 0x1234, flags, qd, 0, 0, 1 if ar else 0) + qname + struct.pack("!HH", qtype, 1) + ar


def dns_response(name: bytes = b"www.example.com") -> bytes:
    query = dns_query(name, flags=0x8180)
    header = bytearray(query[:12])
    header[7] = 1                                   # ancount
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes((93, 184, 216, 34))
    return bytes(header) + query[12:] + answer


def tcp_dns(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


OPT_RR = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)


# -- HTTP -----------------------------------------------------------------------------------

@pytest.mark.parametrize("request_line", [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"POST /upload HTTP/1.1\r\n", b"PUT /x HTTP/1.0\r\n",
    b"HEAD / HTTP/1.1\r\n", b"DELETE /a HTTP/1.1\r\n", b"OPTIONS * HTTP/1.1\r\n", b"PATCH /p HTTP/1.1\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\n", b"TRACE / HTTP/1.1\r\n", b"PROPFIND /dav/ HTTP/1.1\r\n",
    b"GET http://example.com/ HTTP/1.1\r\n", b"\r\nGET / HTTP/1.1\r\n",
])
def test_http_request(request_line: bytes) -> None:
    assert detect_tcp(request_line, b"") == "http"


def test_http_response_alone() -> None:
    # Capture picked up after the request, or only the server's side is visible.
    assert detect_tcp(b"", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == "http"
    assert detect_tcp(b"", b"HTTP/1.0 404 Not Found\r\n") == "http"


@pytest.mark.parametrize("prefix", [b"G", b"GE", b"GET", b"GET ", b"PROPF", b"\r\n", b"\r\nPO"])
def test_http_prefix_needs_more(prefix: bytes) -> None:
    assert detect_tcp(prefix, b"") is None


def test_http_response_prefix_needs_more() -> None:
    assert detect_tcp(b"", b"HTTP/") is None


@pytest.mark.parametrize("data", [b"get / HTTP/1.1\r\n", b"GETX / HTTP/1.1\r\n", b"GET  / HTTP/1.1\r\n",
                                  b"GET\t/ HTTP/1.1\r\n", b"\r\n\r\n\r\nGET / HTTP/1.1\r\n",
                                  b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
def test_not_http_request(data: bytes) -> None:
    # Methods are case-sensitive, one SP separates them from the target; HTTP/2 prior
    # knowledge is not HTTP/1.x. With the server silent the answer waits for a server banner.
    assert detect_tcp(data, b"") is None
    assert detect_tcp(data, b"\x00" * 8) is False
    assert detect_tcp(data + bytes(300), b"") is False


# -- TLS ------------------------------------------------------------------------------------

def test_tls_client_hello() -> None:
    assert detect_tcp(TLS_CLIENT_HELLO_HEAD[:6], b"") == "tls"
    assert detect_tcp(TLS_CLIENT_HELLO_HEAD, b"") == "tls"
    for minor in range(5):                          # record versions SSL 3.0 .. "TLS 1.3"
        assert detect_tcp(bytes((0x16, 3, minor, 0, 200, 1)), b"") == "tls"


def test_tls_server_hello_alone() -> None:
    assert detect_tcp(b"", TLS_SERVER_HELLO_HEAD) == "tls"


def test_tls_prefix_needs_more() -> None:
    for n in range(1, 6):
        assert detect_tcp(TLS_CLIENT_HELLO_HEAD[:n], b"") is None


@pytest.mark.parametrize("data", [
    bytes.fromhex("1603050100010000"),    # version 3.5
    bytes.fromhex("1602010100010000"),    # major 2
    bytes.fromhex("1603010000010000"),    # empty record
    bytes.fromhex("1603014900010000"),    # record longer than 2^14 + 2048
])
def test_tls_bad_record_header(data: bytes) -> None:
    assert detect_tcp(data, b"\x00" * 8) is False


def test_tls_other_handshake_message_is_not_a_hello() -> None:
    # A handshake record holding a Certificate message: no hello, and the record is not
    # complete, so it is not (yet) recognizable as a record stream picked up mid-connection.
    assert detect_tcp(bytes.fromhex("16030101000b0000fc"), b"") is None
    assert detect_tcp(bytes.fromhex("16030101000b0000fc"), b"garbage!") is None
    assert detect_tcp(bytes.fromhex("1603010004") + bytes.fromhex("0b000000") + b"\x00" * 9, b"x" * 8) is False


def test_roles_swapped_by_flow_table() -> None:
    # A flow picked up mid-connection gets its roles from the ports, which can be wrong:
    # the server's messages then arrive as "toserver" and must still be recognized.
    assert detect_tcp(b"HTTP/1.1 200 OK\r\n", b"GET / HTTP/1.1\r\n") == "http"
    assert detect_tcp(b"HTTP/1.1 200 OK\r\n", b"") == "http"
    assert detect_tcp(TLS_SERVER_HELLO_HEAD, b"") == "tls"
    assert detect_tcp(b"", TLS_CLIENT_HELLO_HEAD) == "tls"
    assert detect_tcp(tcp_dns(dns_response()), b"") == "dns"
    assert detect_tcp(b"", tcp_dns(dns_query())) == "dns"


def test_sslv2_client_hello() -> None:
    assert detect_tcp(SSLV2_CLIENT_HELLO, b"") == "tls"
    assert detect_tcp(SSLV2_CLIENT_HELLO[:4], b"") is None
    # High bit set but not a ClientHello (type 2) / unknown version.
    assert detect_tcp(bytes.fromhex("802e0200020015000000100700c005"), b"x" * 8) is False
    assert detect_tcp(bytes.fromhex("802e0107070015000000100700c005"), b"x" * 8) is False


def test_tls_records_mid_stream() -> None:
    # The monitor started while the connection was up: application-data records only.
    first = bytes.fromhex("1703030010") + bytes(16)
    second = bytes.fromhex("1703030020") + bytes(32)
    assert detect_tcp(first, b"") == "tls"                     # ends exactly at a record end
    assert detect_tcp(first + second[:3], b"") is None        # next header still partial
    assert detect_tcp(first + second + b"x", b"") == "tls"
    assert detect_tcp(b"", second) == "tls"
    assert detect_tcp(first[:10], b"") is None
    assert detect_tcp(first + b"\x00\x01\x02\x03\x04", b"x" * 8) is False


# -- SSH ------------------------------------------------------------------------------------

def test_ssh() -> None:
    assert detect_tcp(b"SSH-2.0-OpenSSH_9.6\r\n", b"") == "ssh"
    assert detect_tcp(b"", b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n") == "ssh"
    assert detect_tcp(b"", b"SSH-1.99-Cisco-1.25\r\n") == "ssh"
    assert detect_tcp(b"SSH-", b"") is None
    assert detect_tcp(b"SSH-3.0-x\r\n", b"SSH-9\r\n") is False


def test_ssh_banner_after_prelude_lines() -> None:
    # RFC 4253 4.2: the server may send other lines before its identification string.
    assert detect_tcp(b"", b"Welcome to host\r\nAuthorized use only\r\nSSH-2.0-dropbear\r\n") == "ssh"
    assert detect_tcp(b"", b"\x00\x01binary\nSSH-2.0-x\r\n") is None     # not a text prelude


# -- SMTP / FTP -----------------------------------------------------------------------------

@pytest.mark.parametrize("banner", [b"220 ", b"220-", b"220 mx.example.net ready\r\n",
                                    b"220-Welcome\r\n220 Second line\r\n", b"220\r\n", b"220"])
def test_220_banner_alone_is_ambiguous(banner: bytes) -> None:
    assert detect_tcp(b"", banner) is None
    # Even a long multi-line greeting waits for the client.
    assert detect_tcp(b"", b"220-" + b"x" * 500 + b"\r\n220 \r\n") is None


@pytest.mark.parametrize("command", [b"EHLO client.example\r\n", b"HELO x\r\n", b"ehlo x\r\n", b"Helo x\r\n"])
def test_smtp_by_client_command(command: bytes) -> None:
    assert detect_tcp(command, b"220 mx.example.net ready\r\n") == "smtp"


@pytest.mark.parametrize("command", [b"USER anonymous\r\n", b"AUTH TLS\r\n", b"FEAT\r\n", b"SYST\r\n",
                                     b"OPEN x\r\n", b"user bob\r\n", b"feat\n"])
def test_ftp_by_client_command(command: bytes) -> None:
    assert detect_tcp(command, b"220 Service ready\r\n") == "ftp"


@pytest.mark.parametrize(("banner", "expected"), [
    (b"220 mx.google.com ESMTP a1-20020a\r\n", "smtp"),
    (b"220 mail.example.com ESMTP Postfix (Debian/GNU)\r\n", "smtp"),
    (b"220 host Microsoft ESMTP MAIL Service ready\r\n", "smtp"),
    (b"220 mail.example.org ready\r\n", "smtp"),
    (b"220 (vsFTPd 3.0.3)\r\n", "ftp"),
    (b"220 ProFTPD Server (Debian) [::ffff:10.0.0.1]\r\n", "ftp"),
    (b"220-FileZilla Server 1.7.0\r\n220 Please visit https://filezilla-project.org/\r\n", "ftp"),
    (b"220 mail.example.com FTP server ready\r\n", "ftp"),     # host name "mail" loses to FTP
    (b"220 SMTP and FTP gateway\r\n", None),                  # says both: the client decides
])
def test_220_banner_words(banner: bytes, expected: str | None) -> None:
    assert detect_tcp(b"", banner) == expected


def test_220_client_command_beats_banner_words() -> None:
    assert detect_tcp(b"USER x\r\n", b"220 SMTP and FTP gateway\r\n") == "ftp"
    assert detect_tcp(b"EHLO x\r\n", b"220 SMTP and FTP gateway\r\n") == "smtp"


def test_220_partial_command_needs_more() -> None:
    for partial in (b"E", b"EH", b"EHL", b"EHLO", b"US", b"USER"):
        assert detect_tcp(partial, b"220 ready\r\n") is None


def test_220_unknown_command() -> None:
    # Neither protocol starts like this: give up, unless the greeting said what it is.
    assert detect_tcp(b"QUIT\r\n", b"220 ready\r\n") is False
    assert detect_tcp(b"HELP\r\n", b"220 ready\r\n") is False
    assert detect_tcp(b"EHLOX\r\n", b"220 ready\r\n") is False
    assert detect_tcp(b"\x00\x01\x02\x03\x04", b"220 ready\r\n") is False
    assert detect_tcp(b"QUIT\r\n", b"220 mx ESMTP\r\n") == "smtp"


def test_client_command_without_greeting_waits() -> None:
    # Without the server's greeting, "USER" is also POP3: nothing to decide on yet.
    assert detect_tcp(b"EHLO x\r\n", b"") is None
    assert detect_tcp(b"USER bob\r\n", b"") is None
    assert detect_tcp(b"USER bob\r\n", b"+OK POP3 ready\r\n") is False


def test_smtp_client_only_capture() -> None:
    # One-way capture of a mail submission: the greeting is missing, the transaction is not.
    assert detect_tcp(b"ehlo client.example\r\nmail FROM:<a@example.com>\r\n", b"") == "smtp"
    assert detect_tcp(b"EHLO client.example\r\nSTARTTLS\r\n", b"") == "smtp"
    assert detect_tcp(b"EHLO client.example\r\nQUIT\r\n", b"") is None
    assert detect_tcp(b"EHLO client.example\r\nmail FROM:<a@example.com>\r\n", b"+OK\r\n") is False


def test_non_220_greeting() -> None:
    assert detect_tcp(b"", b"2") is None
    assert detect_tcp(b"", b"22") is None
    assert detect_tcp(b"", b"2201 x\r\n") is None       # waits for the client (or 256 bytes)
    assert detect_tcp(b"USER x\r\n", b"2201 x\r\n") is False
    assert detect_tcp(b"EHLO x\r\n", b"554 go away\r\n") is False


# -- DNS over TCP ---------------------------------------------------------------------------

def test_dns_tcp_query() -> None:
    assert detect_tcp(tcp_dns(dns_query()), b"") == "dns"
    assert detect_tcp(tcp_dns(dns_query(ar=OPT_RR)), b"") == "dns"
    assert detect_tcp(tcp_dns(dns_query(b"example.com", 252)), b"") == "dns"     # AXFR


def test_dns_tcp_response_alone() -> None:
    assert detect_tcp(b"", tcp_dns(dns_response())) == "dns"


def test_dns_tcp_prefixes_need_more() -> None:
    message = tcp_dns(dns_query())
    for n in range(1, len(message)):
        assert detect_tcp(message[:n], b"") is None, n
    assert detect_tcp(message, b"") == "dns"


def test_dns_tcp_port_hint() -> None:
    # Unprintable query name and a reserved flag bit: only with port 53 as the server port.
    odd = bytearray(tcp_dns(dns_query(b"\x01\x02.example")))
    odd[5] |= 0x40
    assert detect_tcp(bytes(odd), b"", server_port=53) == "dns"
    assert detect_tcp(bytes(odd), b"x" * 8) is False
    assert detect_tcp(bytes(odd), b"x" * 8, server_port=8053) is False


@pytest.mark.parametrize("message", [
    dns_query(qd=2),                          # two questions
    dns_query(qd=0),                          # no question
    dns_query(flags=0x0101),                  # a query with an RCODE
    dns_query(flags=0x3100),                  # opcode 6
    dns_query(b""),                           # root name (strict mode wants a real name)
    dns_query(b"www.example.com", 0),         # qtype 0
])
def test_dns_tcp_rejects(message: bytes) -> None:
    assert detect_tcp(tcp_dns(message), b"x" * 8) is False


def test_dns_tcp_length_mismatch() -> None:
    # The length prefix ends before the question does.
    message = dns_query()
    assert detect_tcp(struct.pack("!H", 20) + message, b"x" * 8) is False


# -- give-up rules --------------------------------------------------------------------------

def test_needs_bytes() -> None:
    assert detect_tcp(b"", b"") is None
    assert detect_tcp(b"\x00", b"") is None
    assert detect_tcp(b"\x00\x40\x00", b"\x00\x40\x00") is None     # could still be DNS over TCP
    assert detect_tcp(b"\x00\x00\x00", b"\x00\x00\x00") is False    # too short for a DNS message


def test_one_side_garbage_waits_then_gives_up() -> None:
    assert detect_tcp(b"\xff\xfe\xfd\xfc" * 10, b"") is None       # a server banner may come
    assert detect_tcp(b"\xff\xfe\xfd\xfc" * 64, b"") is False
    assert detect_tcp(b"", b"\xff\xfe\xfd\xfc" * 64) is False


def test_both_sides_garbage() -> None:
    assert detect_tcp(b"hello there\r\n", b"who are you?\r\n") is False
    # SOCKS4 CONNECT and its reply.
    assert detect_tcp(b"\x04\x01\x00\x50\x5d\xb8\xd8\x22user\x00", b"\x00\x5a\x00\x50\x5d\xb8\xd8\x22") is False


def test_client_side_wins() -> None:
    # TLS spoken to an HTTP server: the client's protocol is what the flow carries.
    assert detect_tcp(TLS_CLIENT_HELLO_HEAD, b"HTTP/1.1 400 Bad Request\r\n") == "tls"
    assert detect_tcp(b"GET / HTTP/1.1\r\n", b"220 ESMTP\r\n") == "http"


def test_random_bytes_not_recognized() -> None:
    rng = random.Random(20240601)
    recognized = 0
    for _ in range(20000):
        a = rng.randbytes(rng.choice((4, 16, 64, 300)))
        b = rng.randbytes(rng.choice((0, 4, 16, 64, 300)))
        result = detect_tcp(a, b)
        assert result in (None, False) or result in APP_PROTOS
        recognized += isinstance(result, str)
    assert recognized == 0


def test_fuzz_mutations_never_raise() -> None:
    rng = random.Random(7)
    seeds = [TLS_CLIENT_HELLO_HEAD, SSLV2_CLIENT_HELLO, tcp_dns(dns_query(ar=OPT_RR)), tcp_dns(dns_response()),
             b"GET / HTTP/1.1\r\n", b"SSH-2.0-x\r\n", b"220 ESMTP\r\n", b"EHLO x\r\n",
             bytes.fromhex("1703030010") + bytes(16)]
    for seed in seeds:
        for cut in range(len(seed) + 1):
            for other in (b"", b"220 x\r\n", seed[:cut]):
                detect_tcp(seed[:cut], other)
                detect_tcp(other, seed[:cut], server_port=53)
        for _ in range(500):
            data = bytearray(seed)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            result = detect_tcp(bytes(data), b"")
            assert result in (None, False) or result in APP_PROTOS
            assert detect_udp(bytes(data), 53, 40000) in (None, "dns")
            assert detect_udp(bytes(data[2:]), 1000, 2000) in (None, "dns")


# -- UDP ------------------------------------------------------------------------------------

def test_dns_udp_on_dns_port() -> None:
    assert detect_udp(dns_query(), 40000, 53) == "dns"
    assert detect_udp(dns_response(), 53, 40000) == "dns"
    assert detect_udp(dns_query(ar=OPT_RR), 40000, 53) == "dns"


def test_mdns_answer_without_question() -> None:
    response = dns_response(b"printer.local")
    name_end = 12 + len(b"\x07printer\x05local\x00") + 4
    announcement = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\x07printer\x05local\x00" \
        + response[name_end + 2:]
    assert detect_udp(announcement, 5353, 5353) == "dns"
    # A query-flagged message with no question is not plausible.
    assert detect_udp(struct.pack("!HHHHHH", 0, 0, 0, 1, 0, 0) + announcement[12:], 5353, 5353) is None


def test_dns_udp_any_port_strict() -> None:
    assert detect_udp(dns_query(), 40000, 5300) == "dns"
    assert detect_udp(dns_response(), 5300, 40000) == "dns"
    assert detect_udp(dns_query(ar=OPT_RR), 40000, 5300) == "dns"
    # Trailing junk after the last record: not a well-formed message (the DNS port would accept it).
    assert detect_udp(dns_query() + b"junk", 40000, 5300) is None
    assert detect_udp(dns_query() + b"junk", 40000, 53) == "dns"
    # Counts promise more records than there are.
    broken = bytearray(dns_response())
    broken[7] = 2
    assert detect_udp(bytes(broken), 5300, 40000) is None


def test_dns_udp_truncated_by_caller() -> None:
    # Callers may pass only the first 512 bytes: a long response still passes on its question.
    response = dns_response()
    header = bytearray(response[:12])
    header[7] = 40
    answer = response[len(dns_query(flags=0x8180)):]
    big = bytes(header) + dns_query()[12:] + answer * 40
    assert len(big) > 512
    assert detect_udp(big[:512], 5300, 40000) == "dns"
    assert detect_udp(big[:512], 53, 40000) == "dns"


def test_dns_format_neighbours() -> None:
    # NetBIOS name service reuses the DNS message format for NetBIOS names: not DNS.
    nbns = struct.pack("!HHHHHH", 0x895B, 0x0110, 1, 0, 0, 0) + b"\x20" + b"EJFDEBFEEBFACACACACACACACACACACA" \
        + b"A\x00" + struct.pack("!HH", 0x20, 1)
    assert detect_udp(nbns, 137, 137) is None
    # LLMNR (RFC 4795) is DNS on port 5355, and is reported as such.
    assert detect_udp(dns_query(b"wpad"), 51837, 5355) == "dns"


@pytest.mark.parametrize("payload", [
    b"", b"\x00" * 11, b"\x00" * 12, b"\x00" * 64,
    bytes.fromhex("c30000000108") + bytes(40),            # QUIC long header
    bytes.fromhex("000100002112a442") + bytes(12),        # STUN binding request
    b"\x17\x00\x03\x2a" + bytes(44),                       # NTP-ish
])
def test_udp_negatives(payload: bytes) -> None:
    assert detect_udp(payload, 40000, 4433) is None
    assert detect_udp(payload, 40000, 53) is None


def test_udp_random_bytes() -> None:
    rng = random.Random(99)
    hits_any_port = 0
    for _ in range(20000):
        payload = rng.randbytes(rng.choice((12, 30, 100, 512)))
        hits_any_port += detect_udp(payload, 40000, 4000) == "dns"
        detect_udp(payload, 40000, 53)
    assert hits_any_port == 0


# -- third-party corpus vs tshark ------------------------------------------------------------
# One tshark pass per capture gives every packet's payload and tshark's own verdict on it;
# streams are put together from the payloads in sequence order (enough for the first bytes).

_TSHARK_NAMES = {"http": "http", "tls": "tls", "ssl": "tls", "ssh": "ssh", "smtp": "smtp", "ftp": "ftp", "dns": "dns"}
# The protocol folders, plus captures with flows picked up mid-connection (roles guessed from
# ports, sometimes wrongly), keep-alives, IPv6 and pcapng.
_DETECT_FOLDERS = ("http/", "http-evasion/", "smtp/", "ftp/", "dns/", "tls/", "ipv6/", "mixed/", "pcapng/")
# Streams where tshark names the protocol from the port alone and the bytes cannot tell.
_TSHARK_BY_PORT_ONLY = {
    ("pcapng/pp-pcapng-example.pcapng", 12): "SSH picked up mid-connection: encrypted packets only, port 22",
}
_UDP_FOLDERS = ("dns/", "ipv6/", "mixed/", "sll/", "frag/")
_PACKET_FIELDS = ("frame.protocols", "ip.src", "ipv6.src", "tcp.stream", "tcp.srcport", "tcp.dstport", "tcp.flags",
                  "tcp.seq", "tcp.len", "tcp.payload", "udp.srcport", "udp.dstport", "udp.payload",
                  "tls.handshake.type", "tls.handshake.extensions_server_name")


@dataclass
class CorpusPacket:
    protocols: list[str]
    src: str
    stream: int | None
    sport: int
    dport: int
    flags: int
    seq: int
    payload: bytes
    udp: bool
    hello_types: list[str]
    sni: str


@dataclass
class CorpusStream:
    """One TCP stream: chunks in capture order, direction 0 = client -> server."""

    chunks: list[tuple[int, bytes]] = field(default_factory=list)
    tshark_proto: str | None = None       # our name for tshark's dissection of its first payload
    chunks_seen: bool = False
    sni: str = ""                         # first SNI tshark saw in it
    client_hello: bool = False            # tshark saw a ClientHello from the client

    def data(self, direction: int) -> bytes:
        return b"".join(chunk for d, chunk in self.chunks if d == direction)


def corpus_rows(folders: tuple[str, ...]) -> list[dict[str, str]]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(CORPUS_MISSING)
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    with open(CORPUS / "MANIFEST.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [row for row in rows if row["path_in_corpus"].startswith(folders) and row["packets"] not in ("0", "-")]


@functools.cache
def corpus_packets(rel: str) -> tuple[CorpusPacket, ...]:
    cmd = ["tshark", "-r", str(CORPUS / rel), "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    for name in _PACKET_FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    packets = []
    for line in out.splitlines():
        values = line.split("|")
        if len(values) != len(_PACKET_FIELDS):
            continue
        f = dict(zip(_PACKET_FIELDS, values))
        last = {k: v.split(",")[-1] for k, v in f.items()}    # innermost layer when tunnelled
        udp = bool(last["udp.srcport"]) and not last["tcp.srcport"]
        if not (last["tcp.stream"] or udp):
            continue
        layer = "udp" if udp else "tcp"
        packets.append(CorpusPacket(
            protocols=f["frame.protocols"].split(":"), src=last["ip.src"] or last["ipv6.src"],
            stream=None if udp else int(last["tcp.stream"]),
            sport=int(last[f"{layer}.srcport"]), dport=int(last[f"{layer}.dstport"]),
            flags=int(last["tcp.flags"], 16) if last["tcp.flags"] else 0,
            seq=int(last["tcp.seq"]) if last["tcp.seq"] else 0, payload=bytes.fromhex(last[f"{layer}.payload"]), udp=udp,
            hello_types=f["tls.handshake.type"].split(",") if f["tls.handshake.type"] else [],
            sni=next((s for s in f["tls.handshake.extensions_server_name"].split(",") if s), "")))
    return tuple(packets)


def prefetch(rels: list[str]) -> None:
    """tshark's start-up dominates: run it for two captures at a time."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(corpus_packets, rels))


def tcp_streams(packets: tuple[CorpusPacket, ...]) -> dict[int, CorpusStream]:
    """Streams from per-packet payloads: in-order bytes per direction, stopping a direction at a hole.

    The client is the sender of the SYN, else the receiver of the SYN+ACK, else the higher port
    (the same rule as the flow table)."""
    by_stream: dict[int, list[CorpusPacket]] = {}
    for p in packets:
        if p.stream is not None:
            by_stream.setdefault(p.stream, []).append(p)
    streams = {}
    for n, group in by_stream.items():
        first = group[0]
        syn = next((p for p in group if p.flags & 0x02), None)
        if syn is not None:
            client = (syn.src, syn.sport) if not syn.flags & 0x10 else (None, syn.dport)
        else:
            client = (first.src, first.sport) if first.sport > first.dport else (None, first.dport)
        stream = CorpusStream()
        next_seq: dict[int, int | None] = {}
        for p in group:
            is_client = p.sport == client[1] and (client[0] is None or p.src == client[0])
            direction = 0 if is_client else 1
            if direction not in next_seq:
                next_seq[direction] = p.seq + (1 if p.flags & 0x02 else 0)
            expected = next_seq[direction]
            if expected is not None and p.payload:
                if p.seq > expected:
                    next_seq[direction] = None                    # a hole: nothing after it
                elif p.seq + len(p.payload) > expected:
                    stream.chunks.append((direction, p.payload[expected - p.seq:]))
                    next_seq[direction] = p.seq + len(p.payload)
            if p.payload and not stream.chunks_seen:
                # tshark's verdict on the first payload packet: later protocols (STARTTLS,
                # CONNECT, MySQL switching to TLS) are not what detection is about.
                stream.chunks_seen = True
                known = [_TSHARK_NAMES[x] for x in p.protocols[p.protocols.index("tcp") + 1:] if x in _TSHARK_NAMES] \
                    if "tcp" in p.protocols else []
                stream.tshark_proto = known[0] if known else None
            if direction == 0 and "1" in p.hello_types:
                stream.client_hello = True
                stream.sni = stream.sni or p.sni
        streams[n] = stream
    return streams


def detect_like_session(chunks: list[tuple[int, bytes]], limit: int = 4096) -> str | None | bool:
    """Feed chunks in order as the session does: first non-None answer wins; running out is "failed"."""
    heads = [bytearray(), bytearray()]
    for direction, data in chunks:
        head = heads[direction]
        room = limit - len(head)
        head += data[:room]
        result = detect_tcp(bytes(heads[0]), bytes(heads[1]))
        if result is None and len(data) >= room:
            result = False
        if result is not None:
            return result
    return None


def test_corpus_tcp_streams_match_tshark() -> None:
    """Every TCP stream that tshark dissects as one of our protocols is detected as that protocol."""
    rows = corpus_rows(_DETECT_FOLDERS)
    prefetch([row["path_in_corpus"] for row in rows])
    checked, mismatches = 0, []
    for row in rows:
        for n, stream in tcp_streams(corpus_packets(row["path_in_corpus"])).items():
            got = detect_like_session(stream.chunks)
            assert got in (None, False) or got in APP_PROTOS
            if stream.tshark_proto is not None and stream.chunks \
                    and (row["path_in_corpus"], n) not in _TSHARK_BY_PORT_ONLY:
                checked += 1
                if got != stream.tshark_proto:
                    mismatches.append((row["path_in_corpus"], n, stream.tshark_proto, got))
    assert checked >= 200
    assert not mismatches, mismatches


def test_corpus_udp_datagrams_match_tshark() -> None:
    """Every UDP datagram tshark calls DNS or mDNS is detected as DNS, and no other one is
    (LLMNR shares the DNS format and may go either way)."""
    rows = corpus_rows(_UDP_FOLDERS)
    prefetch([row["path_in_corpus"] for row in rows])
    checked, wrong = 0, []
    for row in rows:
        for p in corpus_packets(row["path_in_corpus"]):
            if not p.udp or not p.payload:
                continue
            got = detect_udp(p.payload[:512], p.sport, p.dport)
            top = p.protocols[-1]
            if top == "llmnr":
                continue
            is_dns = "dns" in p.protocols or "mdns" in p.protocols
            checked += is_dns
            if (got == "dns") != is_dns and "_ws.malformed" not in p.protocols:
                wrong.append((row["path_in_corpus"], p.sport, p.dport, top, got, p.payload[:24].hex()))
    assert checked >= 500
    assert not wrong, wrong

"""Application protocol detection by content, from the first bytes of a flow.

`detect_tcp` looks at the first bytes of each direction of a reassembled TCP stream and
`detect_udp` at one datagram. Recognized: HTTP/1.x, TLS (incl. the SSLv2-compatible
ClientHello, and record streams picked up mid-connection), SSH, SMTP, FTP (control channel),
DNS over TCP and UDP (incl. mDNS).

What it does not do:
- no port-based guessing: a port is at most a hint that lets a DNS header pass with a
  lighter check (random bytes never become "dns" just because of port 53);
- no parsing beyond what the decision needs (the protocol modules do that), and no state:
  callers pass the whole prefix seen so far on every call;
- no HTTP/2 prior-knowledge, QUIC, POP3/IMAP: those come out as "not recognized"; FTP data
  channels carry file bytes that nothing here could recognise: the session learns them from
  the control channel instead (agent.apps.ftp) and reports them as "ftp-data".

Every check is a prefix test, so a direction that has ruled out every protocol stays ruled
out however many bytes follow: once both directions have done so, `detect_tcp` answers False
at once (no need to wait for 64 bytes each); a single talking direction is given 256 bytes for
the other to answer. Both directions are checked for both roles, because the flow table has to
guess who is the client when it picks a connection up in the middle. Hostile or truncated
input never raises: it is simply not recognized.
"""

from __future__ import annotations

import struct
from typing import Literal

APP_PROTOS = ("http", "tls", "ssh", "smtp", "ftp", "ftp-data", "dns")   # values used in events as app_proto

# Bytes after which a direction that matches nothing stops waiting for the silent other one.
_GIVE_UP_ONE = 256

# Methods are case-sensitive (RFC 9110). WebDAV verbs are included: WebDAV is HTTP, and
# cloud-drive uploads through it are exactly the egress we want parsed.
_HTTP_METHODS = (
    b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT", b"SEARCH",
)
_HTTP_MAX_METHOD = max(map(len, _HTTP_METHODS))
_HTTP_MAX_LEADING_CRLF = 4          # RFC 9112 2.2: servers ignore empty lines before a request
_HTTP_RESPONSE = b"HTTP/1."

_SSH_BANNERS = (b"SSH-2.", b"SSH-1.")   # "SSH-2.0-..." and the old "SSH-1.99-..." / "SSH-1.5-..."
_SSH_PRELUDE_SCAN = 1024                # RFC 4253 4.2: a server may send text lines before its banner

# First command a client sends after a "220" greeting (4 letters, then SP or CRLF).
_SMTP_COMMANDS = frozenset((b"EHLO", b"HELO"))
_FTP_COMMANDS = frozenset((b"USER", b"AUTH", b"FEAT", b"SYST", b"OPEN", b"HOST", b"OPTS", b"CLNT"))
# Commands that follow EHLO in a mail transaction (RFC 5321 3.3, RFC 3207, RFC 4954).
_SMTP_SECOND_COMMANDS = (b"MAIL FROM:", b"STARTTLS", b"AUTH ")
# Greeting keywords, looked for (upper-cased) in the banner when the client has not spoken.
_SMTP_BANNER_WORDS = (b"SMTP", b"POSTFIX", b"SENDMAIL", b"EXIM")   # "SMTP" also covers "ESMTP"
_FTP_BANNER_WORDS = (b"FTP", b"FILEZILLA")                          # "FTP" covers vsFTPd, ProFTPD, Pure-FTPd
_WEAK_SMTP_WORD = b"MAIL"      # often only a host name ("mail.example.com"): loses to an FTP word
_BANNER_SCAN = 512

_TLS_MAX_RECORD = (1 << 14) + 2048      # RFC 5246 6.2.3 ciphertext limit; real records are <= 2^14 + 256
_SSL2_VERSIONS = frozenset((0x0002, 0x0300, 0x0301, 0x0302, 0x0303))

_DNS_PORTS = frozenset((53, 5353))
_NBNS_PORT = 137
_DNS_OPCODES = frozenset((0, 1, 2, 4, 5))     # QUERY, IQUERY (obsolete), STATUS, NOTIFY, UPDATE
_DNS_STRICT_OPCODES = frozenset((0, 4, 5))
_DNS_QCLASSES = frozenset((1, 3, 4, 254, 255))  # IN, CH, HS, NONE, ANY
_DNS_MIN_QUESTION = 5                          # root name + type + class
_DNS_MIN_RR = 11                               # root name + type + class + ttl + rdlength
_DNS_MAX_NAME = 255
_DNS_STRICT_MAX_QD = 4                         # multi-question messages exist in theory only
_DNS_COUNTS = struct.Struct("!HHHH").unpack_from  # qdcount, ancount, nscount, arcount
_UDP_PREFIX_CUT = 512                          # callers may hand us only this much of a datagram

# Per-direction verdicts. `_MAYBE` = this direction's bytes are a prefix of something we know.
_MAYBE = None
_NO = False
_BANNER_220 = "220"            # server greeting shared by SMTP and FTP; the client decides
_HEADER_OK = "header ok"       # internal to the TLS checks, never returned


def detect_tcp(toserver: bytes, toclient: bytes, *, server_port: int | None = None
               ) -> str | None | Literal[False]:
    """Decide app_proto from the first bytes seen in each direction (either may be empty).

    Returns a name from APP_PROTOS when recognized, None when more bytes are needed to decide,
    False when it is certainly none of ours (caller stops trying; event says app_proto "failed").
    `server_port` is only a hint for DNS; leaving it out never makes a real protocol unrecognized.
    """
    dns_port = server_port == 53
    client = _client_side(toserver, dns_port) if toserver else _MAYBE
    # The client's bytes say what the connection is used for (and are what egress scanning
    # reads), so a recognized client side wins over whatever the server answered.
    if isinstance(client, str):
        return client
    server = _server_side(toclient, dns_port) if toclient else _MAYBE
    if server == _BANNER_220:
        return _resolve_220(toserver, toclient)
    if isinstance(server, str):
        return server
    if (toserver and client is _MAYBE) or (toclient and server is _MAYBE):
        return None
    if not toclient and _smtp_without_greeting(toserver):
        return "smtp"
    if toserver and toclient:
        return False                    # both directions ruled out everything
    # Only one direction has spoken and it matches nothing; the other may still send a
    # banner (SSH/SMTP/FTP servers speak first), so wait a little before giving up.
    return False if max(len(toserver), len(toclient)) >= _GIVE_UP_ONE else None


def detect_udp(payload: bytes, sport: int, dport: int) -> str | None:
    """DNS only for now.

    With port 53 or 5353 on either side: a plausible DNS header (valid opcode, sane counts,
    a question that is not malformed; mDNS answers without a question are fine). On any other
    port: a well-formed DNS message with 1..4 questions whose first question parses with a
    printable name and a known class, and (unless the payload may have been cut at 512 bytes)
    whose every record parses to exactly the end of the datagram.
    """
    if sport in _DNS_PORTS or dport in _DNS_PORTS:
        return "dns" if _dns_udp_plausible(payload) else None
    if sport == _NBNS_PORT or dport == _NBNS_PORT:
        return None         # NetBIOS name service borrowed DNS's format; it is not DNS
    return "dns" if _dns_udp_strict(payload) else None


# -- per-direction checks -------------------------------------------------------------------

def _client_side(data: bytes, dns_port: bool) -> str | None | Literal[False]:
    verdicts = (
        _tls_client_hello(data),
        _sslv2_client_hello(data),
        _http_request(data),
        _prefix(data, _SSH_BANNERS, "ssh"),
        _dns_tcp(data, response=False, lenient=dns_port),
        _tls_records(data),
        # The flow table guesses the roles of a flow picked up mid-connection (higher port =
        # client), and the guess is sometimes wrong: accept the server's messages here too.
        _tls_server_hello(data),
        _prefix(data, (_HTTP_RESPONSE,), "http"),
        _dns_tcp(data, response=True, lenient=dns_port),
    )
    return _combine(verdicts)


def _server_side(data: bytes, dns_port: bool) -> str | None | Literal[False]:
    if data[:3] == b"220" and (len(data) == 3 or data[3:4] in (b" ", b"-", b"\r", b"\n")):
        return _BANNER_220
    verdicts = (
        _tls_server_hello(data),
        _prefix(data, (_HTTP_RESPONSE,), "http"),
        _prefix(data, _SSH_BANNERS, "ssh"),
        _dns_tcp(data, response=True, lenient=dns_port),
        _tls_records(data),
        # Roles swapped by the flow table's guess (see `_client_side`).
        _tls_client_hello(data),
        _http_request(data),
        _dns_tcp(data, response=False, lenient=dns_port),
    )
    result = _combine(verdicts)
    if result is _NO:
        if len(data) < 3 and b"220".startswith(data):
            return _MAYBE
        if _ssh_after_prelude(data):
            return "ssh"
    return result


def _combine(verdicts: tuple[str | None | bool, ...]) -> str | None | Literal[False]:
    maybe = False
    for verdict in verdicts:
        if isinstance(verdict, str):
            return verdict
        if verdict is _MAYBE:
            maybe = True
    return _MAYBE if maybe else _NO


def _prefix(data: bytes, prefixes: tuple[bytes, ...], name: str) -> str | None | Literal[False]:
    for prefix in prefixes:
        if data.startswith(prefix):
            return name
        if len(data) < len(prefix) and prefix.startswith(data):
            return _MAYBE
    return _NO


def _resolve_220(toserver: bytes, toclient: bytes) -> str | None | Literal[False]:
    """A "220" greeting is SMTP or FTP: the client's first command decides, else the banner text."""
    command = _first_command(toserver) if toserver else _MAYBE
    if isinstance(command, str):
        return command
    banner = _banner_words(toclient[:_BANNER_SCAN])
    if banner is not None:
        return banner
    # An ambiguous greeting answered by a command of neither protocol: some other
    # 220-greeting protocol (or a confused client); waiting for more will not help.
    return _NO if command is _NO else None


def _first_command(data: bytes) -> str | None | Literal[False]:
    if len(data) < 4:
        head = data.upper()
        return _MAYBE if any(verb.startswith(head) for verb in _SMTP_COMMANDS | _FTP_COMMANDS) else _NO
    if len(data) > 4 and data[4:5] not in (b" ", b"\r", b"\n"):
        return _NO
    verb = data[:4].upper()
    if verb in _SMTP_COMMANDS:
        return "smtp" if len(data) > 4 else _MAYBE
    if verb in _FTP_COMMANDS:
        return "ftp" if len(data) > 4 else _MAYBE
    return _NO


def _smtp_without_greeting(data: bytes) -> bool:
    """EHLO/HELO followed by a mail transaction: an SMTP client in a capture that lacks the
    server's side (asymmetric routing, one-way taps). One line alone is not enough."""
    first_end = data.find(b"\n", 0, _BANNER_SCAN)
    if first_end < 0 or data[:5].upper() not in (b"EHLO ", b"HELO "):
        return False
    second = data[first_end + 1:first_end + 1 + len(_SMTP_SECOND_COMMANDS[0])].upper()
    return second.startswith(_SMTP_SECOND_COMMANDS)


def _banner_words(banner: bytes) -> str | None:
    text = banner.upper()
    smtp = any(word in text for word in _SMTP_BANNER_WORDS)
    ftp = any(word in text for word in _FTP_BANNER_WORDS)
    if smtp != ftp:
        return "smtp" if smtp else "ftp"
    if not smtp and _WEAK_SMTP_WORD in text:
        return "smtp"
    return None


def _http_request(data: bytes) -> str | None | Literal[False]:
    start = 0
    while start < len(data) and data[start] in b"\r\n":
        start += 1
        if start > _HTTP_MAX_LEADING_CRLF:
            return _NO
    head = data[start:start + _HTTP_MAX_METHOD + 2]
    if not head:
        return _MAYBE
    maybe = False
    for method in _HTTP_METHODS:
        n = len(method)
        if len(head) <= n:
            maybe = maybe or method.startswith(head)
            continue
        if head.startswith(method) and head[n] == 0x20:
            if len(head) == n + 1:
                maybe = True
            elif 0x21 <= head[n + 1] <= 0x7E:   # request-target: "/", "*", absolute URI, authority
                return "http"
    return _MAYBE if maybe else _NO


def _ssh_after_prelude(data: bytes) -> bool:
    at = data.find(b"\nSSH-", 0, _SSH_PRELUDE_SCAN)
    if at < 0 or not data[at + 1:].startswith(_SSH_BANNERS):
        return False
    return all(0x20 <= c < 0x7F or c in (9, 10, 13) for c in data[:at])


def _tls_header(data: bytes, types: bytes) -> str | None | Literal[False]:
    """First record header: type in `types`, version 3.0-3.4 (TLS 1.3 still says 3.1/3.3), sane length."""
    if not data:
        return _MAYBE
    if data[0] not in types:
        return _NO
    if len(data) >= 2 and data[1] != 3:
        return _NO
    if len(data) >= 3 and data[2] > 4:
        return _NO
    if len(data) >= 5 and not 0 < int.from_bytes(data[3:5], "big") <= _TLS_MAX_RECORD:
        return _NO
    return _MAYBE if len(data) < 5 else _HEADER_OK


def _tls_handshake(data: bytes, msg_type: int) -> str | None | Literal[False]:
    """A TLS handshake record whose first message is `msg_type` (1 ClientHello, 2 ServerHello
    or HelloRetryRequest)."""
    header = _tls_header(data, b"\x16")
    if header is not _HEADER_OK:
        return header
    if len(data) < 6:
        return _MAYBE
    return "tls" if data[5] == msg_type else _NO


def _tls_client_hello(data: bytes) -> str | None | Literal[False]:
    return _tls_handshake(data, 1)


def _tls_server_hello(data: bytes) -> str | None | Literal[False]:
    return _tls_handshake(data, 2)


def _sslv2_client_hello(data: bytes) -> str | None | Literal[False]:
    """SSLv2-format ClientHello (2-byte header with the high bit set), still sent by old clients."""
    if not data[0] & 0x80:
        return _NO
    if len(data) >= 2 and ((data[0] & 0x7F) << 8 | data[1]) < 9:
        return _NO
    if len(data) >= 3 and data[2] != 1:
        return _NO
    if len(data) < 5:
        return _MAYBE
    return "tls" if int.from_bytes(data[3:5], "big") in _SSL2_VERSIONS else _NO


def _tls_records(data: bytes) -> str | None | Literal[False]:
    """A TLS record stream picked up after its handshake (monitor started mid-connection).

    One valid header is too weak on its own; it counts once a second valid header follows at
    the end of the first record, or the bytes end exactly there (segments often end on records).
    """
    header = _tls_header(data, b"\x14\x15\x16\x17")
    if header is not _HEADER_OK:
        return header
    end = 5 + int.from_bytes(data[3:5], "big")
    if len(data) < end:
        return _MAYBE
    if len(data) == end:
        return "tls"
    following = _tls_header(data[end:end + 5], b"\x14\x15\x16\x17")
    return "tls" if following is _HEADER_OK else following


# -- DNS ------------------------------------------------------------------------------------

def _dns_tcp(data: bytes, *, response: bool, lenient: bool) -> str | None | Literal[False]:
    """DNS over TCP (RFC 1035 4.2.2): 2-byte length, then a message with exactly one question."""
    if len(data) < 2:
        return _MAYBE
    limit = 2 + int.from_bytes(data[:2], "big")
    if limit < 2 + 12 + _DNS_MIN_QUESTION:
        return _NO
    if len(data) >= 5:
        if bool(data[4] & 0x80) != response:
            return _NO
        if not _dns_flags_ok(data[4], data[5] if len(data) > 5 else None, strict=not lenient, query=not response):
            return _NO
    if len(data) < 14:
        return _MAYBE
    qd, an, ns, ar = _DNS_COUNTS(data, 6)
    if qd != 1 or _DNS_MIN_QUESTION + (an + ns + ar) * _DNS_MIN_RR > limit - 14:
        return _NO
    end = _dns_question(data, 14, min(limit, len(data)), strict=not lenient)
    if end is None:
        return _MAYBE if len(data) < limit else _NO
    return "dns" if end else _NO


def _dns_flags_ok(hi: int, lo: int | None, *, strict: bool, query: bool | None) -> bool:
    opcode = (hi >> 3) & 0xF
    if opcode not in (_DNS_STRICT_OPCODES if strict else _DNS_OPCODES):
        return False
    if lo is None:
        return True
    if strict and lo & 0x40:            # the Z bit is still reserved (AD/CD are its neighbours)
        return False
    if strict and query and lo & 0x0F:  # a query carries no RCODE
        return False
    return True


def _dns_udp_plausible(payload: bytes) -> bool:
    if len(payload) < 12 or not _dns_flags_ok(payload[2], payload[3], strict=False, query=None):
        return False
    qd, an, ns, ar = _DNS_COUNTS(payload, 4)
    if len(payload) < _UDP_PREFIX_CUT and qd * _DNS_MIN_QUESTION + (an + ns + ar) * _DNS_MIN_RR > len(payload) - 12:
        return False
    if qd == 0:
        # mDNS announcements and some responses carry answers only.
        return bool(payload[2] & 0x80) and an + ns + ar > 0
    end = _dns_question(payload, 12, len(payload), strict=False)
    return end is not False and (end is not None or len(payload) >= _UDP_PREFIX_CUT)


def _dns_udp_strict(payload: bytes) -> bool:
    if len(payload) < 12 + _DNS_MIN_QUESTION:
        return False
    query = not payload[2] & 0x80
    if not _dns_flags_ok(payload[2], payload[3], strict=True, query=query):
        return False
    qd, an, ns, ar = _DNS_COUNTS(payload, 4)
    if not 1 <= qd <= _DNS_STRICT_MAX_QD:
        return False
    end = _dns_question(payload, 12, len(payload), strict=True)
    if not end:
        return False
    if len(payload) >= _UDP_PREFIX_CUT:
        return True                     # possibly cut by the caller: the first question must do
    return _dns_walk(payload, end, qd - 1, an + ns + ar) == len(payload)


def _dns_name(buf: bytes, p: int, end: int, *, strict: bool) -> int | None | Literal[False]:
    """Offset after the name at `p`; None when it runs past `end` (more bytes needed); False if malformed.

    strict: the name of a first question (nothing before it to point at, so no compression),
    printable non-empty labels, as every real query name is.
    """
    total = 0
    while True:
        if p >= end:
            return None
        n = buf[p]
        if n == 0:
            return False if strict and total == 0 else p + 1
        if n & 0xC0 == 0xC0:
            if strict:
                return False
            if p + 2 > end:
                return None
            return p + 2 if int.from_bytes(buf[p:p + 2], "big") & 0x3FFF < p else False
        if n & 0xC0:
            return False                # 0x40/0x80 label types are obsolete
        total += n + 1
        if total > _DNS_MAX_NAME:
            return False
        if strict and not all(0x21 <= c <= 0x7E for c in buf[p + 1:p + 1 + n]):
            return False
        p += 1 + n


def _dns_question(buf: bytes, p: int, end: int, *, strict: bool) -> int | None | Literal[False]:
    q = _dns_name(buf, p, end, strict=strict)
    if not q:
        return q
    if q + 4 > end:
        return None
    if strict:
        qtype = int.from_bytes(buf[q:q + 2], "big")
        qclass = int.from_bytes(buf[q + 2:q + 4], "big") & 0x7FFF   # top bit: mDNS unicast-response
        if qtype == 0 or qclass not in _DNS_QCLASSES:
            return False
    return q + 4


def _dns_walk(buf: bytes, p: int, questions: int, records: int) -> int | Literal[False]:
    """Offset after the remaining questions and resource records, or False if any is malformed."""
    end = len(buf)
    for _ in range(questions):
        q = _dns_question(buf, p, end, strict=False)
        if not q:
            return False
        p = q
    for _ in range(records):
        q = _dns_name(buf, p, end, strict=False)
        if not q or q + 10 > end:
            return False
        p = q + 10 + int.from_bytes(buf[q + 8:q + 10], "big")
        if p > end:
            return False
    return p

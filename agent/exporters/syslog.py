"""RFC 5424 syslog sink over UDP, TCP (RFC 6587 octet counting) or TLS (RFC 5425), spooled on disk.

One message per event:

    <PRI>1 2026-11-27T00:10:33.123456Z HOSTNAME egresswatch PROCID MSGID - {"timestamp":...EVE JSON...}

PRI = facility * 8 + severity, severity from the alert's severity (1 high .. 3 low, mapping
configurable); TIMESTAMP is when the agent emitted the event (the EVE `timestamp` inside MSG is
when the traffic was seen); MSGID is the event_type; no structured data; MSG is the EVE line,
UTF-8 without a BOM (a BOM would be the first bytes of every JSON document SIEM parsers see).

Delivery guarantees, honestly:
- UDP: best effort. A datagram leaves the spool once the kernel took it; a receiver that is down
  or overloaded loses it without anyone knowing (at most an ICMP error on a later send).
- TCP and TLS: plain syslog has no application acknowledgement, so a successful send only means
  the bytes reached our kernel. A record leaves the spool only when (a) the receiver's TCP stack
  has acknowledged its bytes (SIOCOUTQ) and (b) the connection then stayed up for
  `settle_seconds` without the receiver closing or resetting it. If the connection fails first,
  every unsettled record is sent again on the next connection, so a receiver that dies (killed,
  restarted) loses nothing but may see duplicates: at-least-once. At close, a half-close answered
  by the receiver's close proves it read everything. What remains possible: a receiver host that
  vanishes without a reset later than `settle_seconds` after acknowledging data it never wrote.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import ssl
import struct
import termios
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from agent.errors import UsageError
from agent.events import dumps
from agent.exporters.spool import Cursor, DeliveryError, SpooledSink

APP_NAME = "egresswatch"
TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514}
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22,
    "local7": 23,
}
_BATCH_RECORDS = 256
_BATCH_BYTES = 256 << 10
_SETTLE_POLL = 0.1            # seconds between checks while sent records wait to settle


@dataclass(frozen=True, slots=True)
class SyslogOptions:
    address: str = "127.0.0.1:514"      # host:port, [v6addr]:port or host (default port per transport)
    transport: str = "tcp"              # udp | tcp | tls
    facility: str = "local5"            # a name (local0..local7, daemon, security...) or 0..23; Suricata uses local5
    severities: tuple[int, int, int] = (3, 4, 5)   # syslog severity for alert severity 1, 2, 3: err, warning, notice
    other_severity: int = 6             # events without an alert severity (flow...): informational
    hostname: str = ""                  # HOSTNAME field; "" = this host's name
    tls_ca_file: str = ""               # CA bundle to verify the receiver; "" = the system store
    tls_cert_file: str = ""             # client certificate (PEM), when the receiver asks for one
    tls_key_file: str = ""              # its key; "" = in tls_cert_file
    tls_server_name: str = ""           # name checked in the receiver's certificate; "" = the address's host
    spool_dir: str = "/var/lib/egresswatch/spool/syslog"
    spool_limit_bytes: int = 64 << 20
    drain_timeout: float = 5.0          # seconds close() keeps delivering before leaving the rest spooled
    timeout: float = 5.0                # connect / send timeout, seconds
    settle_seconds: float = 2.0         # TCP/TLS: how long an acknowledged record stays resendable
    retry_initial: float = 0.5          # first reconnect delay, doubled per failure up to retry_max
    retry_max: float = 30.0
    event_types: tuple[str, ...] = ("alert",)
    rate_limit_events: int = 10         # per (flow_id, event_type) per window; 0 = unlimited
    rate_limit_window: float = 60.0     # seconds


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `host`, `[v6]` or a bare IPv6 address -> (host, port)."""
    text = text.strip()
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UsageError(f"bad syslog address {text!r}: want host:port or [ipv6]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text                      # a name, an IPv4 address, or an unbracketed IPv6 address
    if not host or any(c.isspace() for c in host):
        raise UsageError(f"bad syslog address {text!r}: no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"bad syslog address {text!r}: port must be 1-65535")
    return host, int(port_text)


def facility_code(value: str | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 23:
        return value
    if isinstance(value, str):
        if value.isdigit() and int(value) <= 23:
            return int(value)
        if value.lower() in FACILITIES:
            return FACILITIES[value.lower()]
    raise UsageError(f"bad syslog facility {value!r}: want 0-23 or one of {', '.join(FACILITIES)}")


def header_field(text: str, limit: int) -> str:
    """HOSTNAME/APP-NAME/PROCID/MSGID: 1..limit printable US-ASCII characters, else the nil value `-`."""
    if not text or len(text) > limit or any(not 33 <= ord(c) <= 126 for c in text):
        return "-"
    return text


def rfc3339(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SyslogFormatter:
    """Everything in the header that does not change between events is computed once."""

    __slots__ = ("facility", "severities", "other_severity", "tail")

    def __init__(self, facility: int, severities: tuple[int, int, int], other_severity: int, hostname: str,
                 procid: int) -> None:
        self.facility = facility
        self.severities = severities
        self.other_severity = other_severity
        self.tail = f" {header_field(hostname, 255)} {APP_NAME} {procid} "

    def severity(self, event: dict[str, Any]) -> int:
        alert = event.get("alert")
        level = alert.get("severity") if isinstance(alert, dict) else None
        if isinstance(level, int) and 1 <= level <= 3:
            return self.severities[level - 1]
        return self.other_severity

    def format(self, event: dict[str, Any], created_us: int) -> bytes:
        pri = self.facility * 8 + self.severity(event)
        msgid = header_field(str(event.get("event_type") or ""), 32)
        head = f"<{pri}>1 {rfc3339(created_us)}{self.tail}{msgid} - "
        return head.encode("ascii") + dumps(event).encode("utf-8")


class SyslogSink(SpooledSink):
    """emit() spools; the sender thread connects, sends, and commits what is settled (see module doc)."""

    name = "syslog"

    def __init__(self, options: SyslogOptions) -> None:
        if options.transport not in TRANSPORTS:
            raise UsageError(f"bad syslog transport {options.transport!r}: want one of {', '.join(TRANSPORTS)}")
        self.options = options
        self.host, self.port = parse_address(options.address, DEFAULT_PORTS[options.transport])
        if len(options.severities) != 3 or not all(0 <= s <= 7 for s in (*options.severities, options.other_severity)):
            raise UsageError("syslog severities must be 0-7: three (for alert severity 1, 2, 3) and one for the rest")
        if options.settle_seconds < 0:
            raise UsageError("syslog settle_seconds must be >= 0")
        self.formatter = SyslogFormatter(facility_code(options.facility), tuple(options.severities),
                                         options.other_severity, options.hostname or socket.gethostname(),
                                         os.getpid())
        self.tls = _tls_context(options) if options.transport == "tls" else None
        super().__init__(spool_dir=options.spool_dir, spool_limit_bytes=options.spool_limit_bytes,
                         drain_timeout=options.drain_timeout, event_types=options.event_types,
                         rate_limit_events=options.rate_limit_events, rate_limit_window=options.rate_limit_window,
                         retry_initial=options.retry_initial, retry_max=options.retry_max,
                         io_timeout=options.timeout)
        self._sock: socket.socket | None = None
        self._written = 0              # bytes handed to the connection (TCP/TLS)
        self._sent_to: Cursor | None = None     # records before this were sent on the current connection
        # Sent, not yet settled: (sent at, bytes written on the connection after it, cursor after it, records).
        self._unsettled: deque[tuple[float, int, Cursor, int]] = deque()
        self._start()

    # -- sender thread -------------------------------------------------------------------------------

    def _deliver(self) -> bool:
        if self._sock is None:
            self._connect()
        if self.options.transport == "udp":
            return self._deliver_datagrams()
        return self._deliver_stream()

    def _deliver_datagrams(self) -> bool:
        items = self.spool.read(max_records=_BATCH_RECORDS, max_bytes=_BATCH_BYTES)
        assert self._sock is not None
        done: Cursor | None = None
        try:
            for (created, event), cursor in items:
                try:
                    self._sock.send(self.formatter.format(event, created))
                    self.sent += 1
                except OSError as exc:
                    if exc.errno != errno.EMSGSIZE:
                        raise
                    self.refused += 1          # larger than a datagram can be: lost, and counted
                    self.last_error = "event too large for a UDP datagram"
                done = cursor
        except OSError as exc:
            raise DeliveryError(f"syslog UDP send failed: {_reason(exc)}") from None
        finally:
            if done is not None:
                self.spool.commit(done)
        return bool(items)

    def _deliver_stream(self) -> bool:
        self._check_open()
        self._settle()
        items = self.spool.read(self._sent_to, max_records=_BATCH_RECORDS, max_bytes=_BATCH_BYTES)
        if not items:
            if self._closing and self._unsettled:
                self._confirm_by_closing()
            return False
        frames = []
        for (created, event), _ in items:
            message = self.formatter.format(event, created)
            frames.append(b"%d " % len(message))
            frames.append(message)
        data = b"".join(frames)
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise DeliveryError(f"syslog {self.options.transport.upper()} send failed: {_reason(exc)}") from None
        self._written += len(data)
        self._sent_to = items[-1][1]
        self._unsettled.append((time.monotonic(), self._written, self._sent_to, len(items)))
        return True

    def _settle(self) -> None:
        """Commit records the receiver acknowledged at least settle_seconds ago on a connection still up."""
        if not self._unsettled:
            return
        acked = self._written - self._unacked_bytes()
        horizon = time.monotonic() - self.options.settle_seconds
        cursor, count = None, 0
        while self._unsettled and self._unsettled[0][0] <= horizon and self._unsettled[0][1] <= acked:
            _, _, cursor, records = self._unsettled.popleft()
            count += records
        if cursor is not None:
            self.spool.commit(cursor)
            self.sent += count

    def _unacked_bytes(self) -> int:
        """Bytes written but not yet acknowledged by the receiver's TCP (Linux SIOCOUTQ). With TLS this
        counts ciphertext, which is never less than the plaintext it carries: conservative."""
        assert self._sock is not None
        try:
            raw = fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
            return struct.unpack("i", raw)[0]
        except OSError:
            return 0                       # not Linux: rely on settle_seconds alone

    def _check_open(self) -> None:
        """A syslog receiver never sends: anything readable is its close (FIN, RST or close_notify).
        Checked before every send, so records do not go into a connection that is already dead."""
        sock = self._sock
        assert sock is not None
        if not select.select([sock], [], [], 0)[0] and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return
        sock.settimeout(0.0)
        try:
            data = sock.recv(4096)
        except (ssl.SSLWantReadError, BlockingIOError):
            return                          # TLS 1.3 session tickets: handled inside ssl, nothing for us
        except OSError as exc:
            raise DeliveryError(f"syslog receiver reset the connection: {_reason(exc)}") from None
        finally:
            if self._sock is not None:
                self._sock.settimeout(self.options.timeout)
        if not data:
            raise DeliveryError("syslog receiver closed the connection")

    def _confirm_by_closing(self) -> None:
        """At shutdown: half-close and wait for the receiver to close too. It reads in order, so its
        close proves it has read every byte we sent; only then do the unsettled records leave the spool."""
        sock, self._sock = self._sock, None
        assert sock is not None
        remaining = self._deadline - time.monotonic()
        confirmed = False
        try:
            if remaining > 0:
                sock.settimeout(remaining)
                if isinstance(sock, ssl.SSLSocket):
                    try:
                        sock = sock.unwrap()      # our close_notify out, the receiver's back
                    except ssl.SSLEOFError:
                        confirmed = True          # it closed the TCP connection after reading close_notify
                if not confirmed:
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(4096):        # a timeout raises: not confirmed
                        if time.monotonic() >= self._deadline:
                            raise TimeoutError
                    confirmed = True
        except (OSError, ValueError):
            confirmed = False
        finally:
            sock.close()
        if confirmed and self._unsettled:
            self.spool.commit(self._unsettled[-1][2])
            self.sent += sum(entry[3] for entry in self._unsettled)
        self._unsettled.clear()
        self._sent_to = None

    def _idle_wait(self) -> float:
        return _SETTLE_POLL if self._unsettled else super()._idle_wait()

    def _connect(self) -> None:
        transport = self.options.transport
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise DeliveryError(f"syslog receiver {self.host} not resolved: {_reason(exc)}") from None
        try:
            sock.settimeout(self.options.timeout)
            sock.connect(address)
            if transport != "udp":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.options.tls_server_name or self.host)
        except ssl.SSLError as exc:
            sock.close()
            raise DeliveryError(f"syslog TLS handshake failed: {exc.reason or type(exc).__name__}") from None
        except OSError as exc:
            sock.close()
            raise DeliveryError(f"syslog connect to port {self.port} failed: {_reason(exc)}") from None
        self._sock = sock
        self._written = 0

    def _disconnect(self) -> None:
        """Drop the connection; unsettled records will be sent again on the next one."""
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._unsettled.clear()
        self._sent_to = None


def _tls_context(options: SyslogOptions) -> ssl.SSLContext:
    """Verify the receiver against the CA file (or the system store) and its name; offer a client cert."""
    for what, path in (("CA file", options.tls_ca_file), ("certificate", options.tls_cert_file),
                       ("key", options.tls_key_file)):
        if path and not os.access(path, os.R_OK):
            raise UsageError(f"syslog TLS {what} {path} is not readable")
    if options.tls_key_file and not options.tls_cert_file:
        raise UsageError("syslog TLS key file given without a certificate file")
    try:
        context = ssl.create_default_context(cafile=options.tls_ca_file or None)
        if options.tls_cert_file:
            context.load_cert_chain(options.tls_cert_file, options.tls_key_file or None)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"syslog TLS files not usable: {getattr(exc, 'reason', None) or exc}") from None
    return context


def _reason(exc: BaseException) -> str:
    """A short reason without addresses or data: the errno name or the exception type."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    if isinstance(exc, socket.timeout):
        return "timed out"
    return type(exc).__name__

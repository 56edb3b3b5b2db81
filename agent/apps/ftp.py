"""FTP: the control channel's commands, and its data channels tied back to it.

Control channel (`FtpParser`, the sans-IO interface of the other parsers: `feed`, `gap`, `close`
returning `Chunk`s). Both directions are read line by line (CRLF or bare LF; lines past
`_LINE_MAX` are skipped):

- the arguments of the client's commands are emitted for scanning as ``ftp.command`` chunks,
  one part per command (file and directory names, user names), except those of PASS, ACCT,
  AUTH and ADAT: credentials are not our business;
- ``PORT h1,h2,h3,h4,p1,p2`` and ``EPRT |af|addr|port|`` from the client announce an active-mode
  data channel (the server will connect to that address and port); replies ``227 ... (h1,h2,h3,
  h4,p1,p2)`` and ``229 ... (|||port|)`` from the server announce a passive-mode one (the client
  will connect there; 229 means "the address of this control connection");
- the next transfer command names what goes over it: STOR, STOU, APPE (upload), RETR
  (download), LIST, NLST, MLSD (listing), with its file name.

Each announcement becomes an `FtpExpectation`, handed to `on_expect` (set by the session) as
soon as it is parsed, so that a data connection opened right after a 227 reply is recognised.
Its `FtpDataInfo` is filled in when the transfer command comes, which may be after the data
connection has opened (Python's ftplib, for one, connects before it sends STOR): the data
flow holds the same object, and reads it when its event is written.

Data channels (`FtpDataRegistry`, one per process). `expect(...)` records that a connection
from `connector` to `listener:port` is expected; `claim(client_ip, server_ip, server_port,
client_port, ts_us)` is asked for every new TCP flow and returns the `FtpDataInfo` of a match,
once (a data connection serves one transfer). Entries expire after `timeout_us` of packet time
(``app.ftp.data_unclaimed``) and there are at most `max_entries` (the oldest make room:
``limit.ftp_expectations``), so a client that sends PASV in a loop cannot grow memory.
`expecter(flow)` turns the parser's announcements on one control flow into `expect` calls:
the listener address is the one announced, and also the control connection's own address
when they differ (a server behind NAT announces its private address; clients such as curl
connect to the control address instead).

File names in events (`FtpDataInfo.event_fields`) are masked where they could hold an
identifier: every run of 6 or more digits (with X/x) becomes stars, and the local part of an
e-mail address too. The raw name is still scanned (as an ``ftp.command`` chunk of the control
flow), so an identifier in a file name is counted there.

Anomalies: app.ftp.parse_error (a line that is not a command or a reply), app.ftp.gap,
app.ftp.data_unclaimed, limit.ftp_expectations.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.apps.http import Chunk

__all__ = ["FtpDataInfo", "FtpDataRegistry", "FtpExpectation", "FtpParser", "TOSERVER", "TOCLIENT"]

TOSERVER = 0
TOCLIENT = 1

_LINE_MAX = 4096                  # RFC 959 has no limit; real command lines are far shorter
_SECRET_COMMANDS = frozenset((b"PASS", b"ACCT", b"AUTH", b"ADAT"))
_TRANSFERS = {b"STOR": "upload", b"STOU": "upload", b"APPE": "upload", b"RETR": "download",
              b"LIST": "listing", b"NLST": "listing", b"MLSD": "listing"}
_VERB = re.compile(rb"[A-Za-z]{3,4}")
_PORT_ARG = re.compile(rb"\s*(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})\s*")
_PASV_REPLY = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV_REPLY = re.compile(rb"\((.)\1\1(\d{1,5})\1\)")
_REPLY = re.compile(rb"(\d{3})[ -]")
_LONG_DIGITS = re.compile(r"[0-9]{6,}[0-9Xx]*")
_EMAIL_LOCAL = re.compile(r"[^\s/\\@]+(?=@[A-Za-z0-9-]+\.)")


@dataclass(slots=True)
class FtpDataInfo:
    """What a data channel carries, as its control channel said. Filled in as the commands come."""

    mode: str                             # "active" (PORT/EPRT) or "passive" (227/229)
    control_flow_id: int = 0              # set when the expectation is registered
    command: str | None = None            # STOR, RETR, LIST, ...
    filename: str | None = None           # the command's argument (raw: never put it in events)
    direction: str | None = None          # "upload" | "download" | "listing"
    claimed: bool = False                 # a data flow took it (or it expired unclaimed)

    def event_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"control_flow_id": self.control_flow_id, "mode": self.mode}
        if self.command is not None:
            fields["command"] = self.command
        if self.direction is not None:
            fields["direction"] = self.direction
        if self.filename:
            fields["filename"] = mask_filename(self.filename)
        return fields


def mask_filename(name: str) -> str:
    """A file name as events may show it: long digit runs and e-mail local parts starred."""
    name = _LONG_DIGITS.sub(lambda m: "*" * len(m.group()), name)
    return _EMAIL_LOCAL.sub("***", name)


@dataclass(frozen=True, slots=True)
class FtpExpectation:
    """One announced data channel, in the control channel's terms."""

    mode: str                             # "active": the server connects; "passive": the client does
    host: bytes | None                    # announced address (packed), None: the control connection's
    port: int
    info: FtpDataInfo


class FtpParser:
    """Both directions of one FTP control connection (see the module docstring)."""

    __slots__ = ("anomalies", "on_expect", "_lines", "_long", "_part", "_out", "_last", "_closed")

    def __init__(self, anomalies: Counter[str]) -> None:
        self.anomalies = anomalies
        self.on_expect: Callable[[FtpExpectation], None] | None = None
        self._lines = [bytearray(), bytearray()]     # incomplete line per direction
        self._long = [False, False]                 # skipping the rest of an overlong line
        self._part = 0
        self._out: list[Chunk] = []
        self._last: FtpDataInfo | None = None        # latest announced channel without a transfer yet
        self._closed = False

    def feed(self, direction: int, data: bytes | memoryview) -> list[Chunk]:
        out = self._out = []
        if self._closed or not data:
            return out
        data = bytes(data)
        line = self._lines[direction]
        pos, n = 0, len(data)
        while pos < n:
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl + 1
            if not self._long[direction]:
                line += data[pos:end]
                if len(line) > _LINE_MAX:
                    line.clear()
                    self._long[direction] = True
            pos = end
            if nl < 0:
                break
            if self._long[direction]:
                self._long[direction] = False
                continue
            text = bytes(line).rstrip(b"\r\n")
            line.clear()
            if direction == TOSERVER:
                self._command(text)
            else:
                self._reply(text)
        return out

    def gap(self, direction: int, nbytes: int) -> list[Chunk]:
        self._out = []
        if not self._closed:
            self.anomalies["app.ftp.gap"] += 1
            self._lines[direction].clear()
            self._long[direction] = True              # the line in progress lost its start
        return self._out

    def close(self) -> list[Chunk]:
        self._closed = True
        return []

    # -- client ----------------------------------------------------------------------------

    def _command(self, text: bytes) -> None:
        if not text.strip():
            return
        m = _VERB.match(text)
        if m is None or (m.end() < len(text) and text[m.end()] not in b" \t"):
            self.anomalies["app.ftp.parse_error"] += 1
            return
        verb = m.group().upper()
        arg = text[m.end():].strip()
        if arg and verb not in _SECRET_COMMANDS:
            self._part += 1
            self._out.append(Chunk(TOSERVER, "ftp.command", arg + b"\n", self._part))
        if verb == b"PORT":
            self._port(arg)
        elif verb == b"EPRT":
            self._eprt(arg)
        elif verb in _TRANSFERS:
            info = self._last
            if info is not None:
                self._last = None
                info.command = verb.decode()
                info.direction = _TRANSFERS[verb]
                if arg and verb != b"STOU":       # STOU's argument, if any, is not the stored name
                    info.filename = arg.decode("utf-8", "replace")

    def _port(self, arg: bytes) -> None:
        m = _PORT_ARG.fullmatch(arg)
        if m is None:
            self.anomalies["app.ftp.parse_error"] += 1
            return
        numbers = [int(x) for x in m.groups()]
        if max(numbers) > 255:
            self.anomalies["app.ftp.parse_error"] += 1
            return
        self._announce("active", bytes(numbers[:4]), numbers[4] << 8 | numbers[5])

    def _eprt(self, arg: bytes) -> None:
        """RFC 2428: EPRT <d><af><d><address><d><port><d>, af 1 = IPv4, 2 = IPv6."""
        if len(arg) < 5:
            self.anomalies["app.ftp.parse_error"] += 1
            return
        fields = arg[1:].split(arg[:1])
        try:
            family, address, port = fields[0], fields[1], int(fields[2])
            packed = ipaddress.ip_address(address.decode("ascii")).packed
        except (IndexError, ValueError, UnicodeDecodeError):
            self.anomalies["app.ftp.parse_error"] += 1
            return
        if family not in (b"1", b"2") or not 0 < port < 65536:
            self.anomalies["app.ftp.parse_error"] += 1
            return
        self._announce("active", packed, port)

    # -- server ----------------------------------------------------------------------------

    def _reply(self, text: bytes) -> None:
        m = _REPLY.match(text + b" ")
        if m is None:
            return                                # continuation text of a multi-line reply
        code = m.group(1)
        if code == b"227":
            p = _PASV_REPLY.search(text, 4)
            if p is not None:
                numbers = [int(x) for x in p.groups()]
                if max(numbers) <= 255:
                    self._announce("passive", bytes(numbers[:4]), numbers[4] << 8 | numbers[5])
                    return
            self.anomalies["app.ftp.parse_error"] += 1
        elif code == b"229":
            e = _EPSV_REPLY.search(text, 4)
            if e is not None and 0 < int(e.group(2)) < 65536:
                self._announce("passive", None, int(e.group(2)))
                return
            self.anomalies["app.ftp.parse_error"] += 1

    def _announce(self, mode: str, host: bytes | None, port: int) -> None:
        if port == 0:
            self.anomalies["app.ftp.parse_error"] += 1
            return
        info = self._last = FtpDataInfo(mode)
        if self.on_expect is not None:
            self.on_expect(FtpExpectation(mode, host, port, info))


# -- the registry ----------------------------------------------------------------------------

class ControlFlow(Protocol):
    """What `expecter` needs of a control flow (agent.flows.Flow has it)."""

    client: bytes
    server: bytes
    last: int

    @property
    def flow_id(self) -> int: ...


@dataclass(slots=True)
class _Expected:
    connector: bytes
    ts_us: int
    info: FtpDataInfo = field(repr=False)


class FtpDataRegistry:
    """Announced FTP data channels of every control flow of the process, bounded in count and time."""

    __slots__ = ("anomalies", "max_entries", "timeout_us", "_entries")

    def __init__(self, anomalies: Counter[str], *, max_entries: int = 4096, timeout_us: int = 120_000_000) -> None:
        self.anomalies = anomalies
        self.max_entries = max_entries
        self.timeout_us = timeout_us
        # (listener address, port) -> expectation, oldest first (packet time only increases).
        self._entries: OrderedDict[tuple[bytes, int], _Expected] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def expect(self, connector: bytes, listener: bytes, port: int, ts_us: int, info: FtpDataInfo) -> None:
        """A TCP connection from `connector` to `listener`:`port` is expected, for `info`."""
        self._expire(ts_us)
        key = (listener, port)
        if key in self._entries:
            del self._entries[key]                # announced again: the newer one counts
        elif len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
            self.anomalies["limit.ftp_expectations"] += 1
        self._entries[key] = _Expected(connector, ts_us, info)

    def claim(self, client_ip: bytes, server_ip: bytes, server_port: int, client_port: int,
              ts_us: int) -> FtpDataInfo | None:
        """The data-channel info for a new TCP flow (oriented as it opened), or None.

        `client_port` is not part of the match: the connector's port is ephemeral in passive
        mode and only usually 20 in active mode."""
        self._expire(ts_us)
        entry = self._entries.get((server_ip, server_port))
        if entry is None or entry.connector != client_ip:
            return None
        del self._entries[(server_ip, server_port)]
        if entry.info.claimed:
            return None                           # the same channel under its other address
        entry.info.claimed = True
        return entry.info

    def expecter(self, flow: ControlFlow) -> Callable[[FtpExpectation], None]:
        """The `on_expect` for the FTP parser of one control flow."""
        def expect(exp: FtpExpectation) -> None:
            exp.info.control_flow_id = flow.flow_id
            if exp.mode == "passive":              # the FTP client connects to the server
                connector, own = flow.client, flow.server
            else:                                  # the FTP server connects to the client
                connector, own = flow.server, flow.client
            listener = exp.host if exp.host is not None and len(exp.host) == len(own) else own
            self.expect(connector, listener, exp.port, flow.last, exp.info)
            if listener != own:
                self.expect(connector, own, exp.port, flow.last, exp.info)
        return expect

    def _expire(self, now_us: int) -> None:
        entries = self._entries
        limit = now_us - self.timeout_us
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.ts_us >= limit:
                break
            del entries[key]
            if not entry.info.claimed:
                entry.info.claimed = True         # dead now: its other address must not count it again
                self.anomalies["app.ftp.data_unclaimed"] += 1

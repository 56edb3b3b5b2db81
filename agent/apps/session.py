"""Per-flow application layer: detection, protocol parsing, and feeding the classifier.

`AppSession` is the flow's `StreamConsumer`: TCP reassembly hands it each direction's bytes in
order (with explicit gaps); UDP datagrams arrive through `datagram()`. Until the protocol is
known it keeps bounded prefixes of both directions (`DETECT_BYTES`); once known, the prefixes
are replayed into the protocol's handling and everything after goes straight through:

- http, smtp, ftp: a parser from `agent.apps.PARSERS` turns messages into decoded content chunks
  (URI, headers, bodies; envelope, headers, MIME text parts; FTP command arguments);
- ftp-data: a flow the FTP control channel announced (`ftp_data`, see agent.apps.ftp) is not
  detected: its bytes are file content, scanned raw; the FTP parser of a control flow reports
  the channels it announces to `ftp_expect`;
- tls, ssh: ciphertext is not scanned (the TLS SNI is kept);
- anything else (dns, unrecognized): raw stream bytes are scanned.

Undeclared UTF-16 (`agent.apps.charsets.Utf16Text`) is recognised per text — the raw export
direction as a whole, each body/part chunk sequence, each datagram — and transcoded to UTF-8
before the scanner sees it; then full-width digits are folded to ASCII.

Only the flow's export direction is scanned: what the inside host sends (`inspect`):
the client's bytes on an egress flow, the server's bytes on an ingress flow. Data coming
into the network is never counted.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from agent.apps import PARSERS
from agent.apps.charsets import Utf16Text, utf16_to_utf8
from agent.apps.detect import detect_tcp, detect_udp
from agent.apps.ftp import FtpDataInfo, FtpExpectation, FtpParser
from agent.apps.http import Chunk, HttpParser
from agent.apps.tls import MAX_CLIENT_HELLO, client_hello_sni
from agent.reassembly import TOCLIENT, TOSERVER
from classifiers.engine import ScanStream
from classifiers.normalize import ascii_digits_utf8

logger = logging.getLogger(__name__)
_Method = TypeVar("_Method", bound=Callable[..., None])

DETECT_BYTES = 4096        # per direction; detection gives up ("failed") past this
_ENCRYPTED = frozenset(("tls", "ssh"))
_SEPARATOR = b"\n"         # written between unrelated texts so no value spans them
# Chunk kinds that carry whole texts of unknown encoding (bodies, parts, out-of-sync bytes):
# checked for UTF-16. URIs and header values are short and ASCII on the wire.
_TEXT_KINDS = frozenset(("http.body", "smtp.body", "raw"))


def _contained(method: _Method) -> _Method:
    """A bug that odd traffic triggers in a parser must not end the run: count it (`internal.*`),
    log the first of each kind with its traceback, and stop inspecting this flow. With
    `strict` (the test suite) the exception propagates instead."""

    @functools.wraps(method)
    def guarded(self: AppSession, *args: Any) -> None:
        if self.broken:
            return
        try:
            method(self, *args)
        except Exception as exc:
            if self.strict:
                raise
            self.broken = True
            kind = f"internal.app.{type(exc).__name__}"
            if not self.anomalies[kind]:
                logger.error("internal error in %s handling (counted as %s; further ones only counted)",
                             self.app_proto or "app", kind, exc_info=exc)
            self.anomalies[kind] += 1
    return guarded  # type: ignore[return-value]


class AppSession:
    """Detects app_proto for one flow, extracts content, and scans the export direction."""

    __slots__ = ("anomalies", "inspect", "scanner", "strict", "broken", "app_proto", "sni", "gaps", "seen",
                 "_head", "_hello", "_detecting", "_sni_pending", "_parser", "_raw", "_last_part", "_finished",
                 "_text", "ftp_data", "_ftp_expect")

    def __init__(self, anomalies: Counter[str], inspect: int, scanner: ScanStream | None, *,
                 strict: bool = False, ftp_data: FtpDataInfo | None = None,
                 ftp_expect: Callable[[FtpExpectation], None] | None = None) -> None:
        self.anomalies = anomalies
        self.strict = strict
        self.broken = False                      # an internal error stopped inspection of this flow
        self.inspect = inspect                   # TOSERVER (egress) or TOCLIENT (ingress)
        self.scanner = scanner                   # None: no classification for this flow
        self.app_proto: str | None = None
        self.sni: str | None = None
        self.gaps = 0
        self.seen = [0, 0]                       # payload bytes delivered per direction
        self._head = [bytearray(), bytearray()]  # first DETECT_BYTES per direction, while detecting
        self._hello = bytearray()                # client bytes until the ClientHello is complete
        self._detecting = True
        self._sni_pending = False
        self._parser: Any = None                 # the protocol's content extractor, if it has one
        self._raw = False                        # scan the export direction's raw bytes
        self._last_part: tuple[str, int] | None = None
        self._finished = False
        self._text: Utf16Text | None = None     # the text being scanned, if its encoding is sniffed
        self.ftp_data = ftp_data                 # this flow is an FTP data channel (claimed)
        self._ftp_expect = ftp_expect            # where an FTP control parser reports channels
        if ftp_data is not None:
            self.app_proto = "ftp-data"
            self._detecting = False
            if scanner is not None:
                self._raw = True
                self._text = Utf16Text()

    # -- StreamConsumer ------------------------------------------------------------------

    @_contained
    def data(self, direction: int, data: memoryview | bytes) -> None:
        self.seen[direction] += len(data)
        if self._sni_pending and direction == TOSERVER:
            self._feed_hello(data)
        if not self._detecting:
            self._consume(direction, data)
            return
        head = self._head[direction]
        room = DETECT_BYTES - len(head)
        head += data[:room]
        result = detect_tcp(bytes(self._head[TOSERVER]), bytes(self._head[TOCLIENT]))
        if result is None and len(data) >= room:
            result = False               # a full prefix and still undecided: give up
        if result is not None:
            self._start(result or None)
            if len(data) > room:
                self._consume(direction, data[room:])

    @_contained
    def gap(self, direction: int, nbytes: int) -> None:
        self.gaps += 1
        if self._detecting and self._head[direction]:
            # Bytes after a hole are not the continuation of what we were matching on.
            self._start(None)
        if direction == TOSERVER and self._sni_pending:
            self._sni_pending = False
            self._hello = bytearray()
            self.anomalies["app.tls.hello_gap"] += 1
        if self._parser is not None:
            self._scan_chunks(self._parser.gap(direction, nbytes))
        elif self._raw and direction == self.inspect and self.scanner is not None:
            self._end_text()             # bytes after a hole are a new text (and maybe misaligned)
            self.scanner.write(_SEPARATOR)
            self._text = Utf16Text()

    def end(self, direction: int) -> None:
        """Per-direction end: nothing to do; `finish()` runs once when the flow ends."""

    @_contained
    def datagram(self, direction: int, payload: memoryview | bytes, sport: int, dport: int) -> None:
        self.seen[direction] += len(payload)
        if self._detecting:
            self.app_proto = detect_udp(bytes(payload[:512]), sport, dport)
            self._detecting = False
            if self.app_proto is None:
                self.anomalies["app.detect_failed"] += 1
        if direction == self.inspect and self.scanner is not None and len(payload):
            # One write per datagram: the separator goes with it (a scanner call costs more
            # than copying a datagram).
            self.scanner.write(ascii_digits_utf8(utf16_to_utf8(bytes(payload))) + _SEPARATOR)

    @_contained
    def finish(self) -> None:
        """The flow ended: flush what parsers hold, and close the scan stream (late matches)."""
        if self._finished:
            return
        self._finished = True
        if self._detecting and (self._head[TOSERVER] or self._head[TOCLIENT]):
            self._start(None)
        if self._parser is not None:
            self._scan_chunks(self._parser.close())
            if isinstance(self._parser, FtpParser):
                self._parser.on_expect = None
        # A closure over the flow (FTP channels it announces): dropped, so the flow and this
        # session are not a reference cycle left for the garbage collector.
        self._ftp_expect = None
        if self.scanner is not None:
            self._end_text()
            self.scanner.close()

    @property
    def done(self) -> bool:
        """Nothing more is needed from the byte stream: ciphertext and the SNI settled, or broken."""
        return self.broken or (self.app_proto in _ENCRYPTED and not self._sni_pending)

    # -- results -------------------------------------------------------------------------

    def event_app_proto(self) -> str | None:
        """`app_proto` for the event: the protocol, "failed" when bytes flowed but matched nothing."""
        if self.app_proto is not None:
            return self.app_proto
        return "failed" if self.seen[TOSERVER] or self.seen[TOCLIENT] else None

    @property
    def http_host(self) -> str | None:
        parser = self._parser
        return parser.host if isinstance(parser, HttpParser) else None

    def event_fields(self) -> dict[str, Any]:
        if self.sni:
            return {"tls": {"sni": self.sni}}
        host = self.http_host
        if host:
            return {"http": {"hostname": host}}
        if self.ftp_data is not None:
            return {"ftp_data": self.ftp_data.event_fields()}
        return {}

    # -- internals -----------------------------------------------------------------------

    def _start(self, app_proto: str | None) -> None:
        """Detection concluded: set up the protocol's handling and replay the prefixes into it."""
        self._detecting = False
        self.app_proto = app_proto
        if app_proto is None:
            self.anomalies["app.detect_failed"] += 1
        if app_proto == "tls":
            self._sni_pending = True
            if self._head[TOSERVER]:
                self._feed_hello(self._head[TOSERVER])
        if self.scanner is not None:
            parser = PARSERS.get(app_proto or "")
            if parser is not None:
                self._parser = parser(self.anomalies)
                if isinstance(self._parser, FtpParser):
                    self._parser.on_expect = self._ftp_expect
            elif app_proto in _ENCRYPTED:
                self.anomalies["app.encrypted_not_scanned"] += 1
            else:
                self._raw = True
                self._text = Utf16Text()
        head, self._head = self._head, [bytearray(), bytearray()]
        for direction in (TOSERVER, TOCLIENT):
            if head[direction]:
                self._consume(direction, bytes(head[direction]))

    def _consume(self, direction: int, data: memoryview | bytes) -> None:
        if self._parser is not None:
            self._scan_chunks(self._parser.feed(direction, data))
        elif self._raw and direction == self.inspect:
            out = self._text.feed(bytes(data))  # type: ignore[union-attr]
            if out:
                self.scanner.write(ascii_digits_utf8(out))  # type: ignore[union-attr]

    def _scan_chunks(self, chunks: list[Chunk]) -> None:
        scanner = self.scanner
        if scanner is None:
            return
        for chunk in chunks:
            if chunk.direction != self.inspect or not chunk.data:
                continue
            part = (chunk.kind, chunk.part)
            lead = b""
            if part != self._last_part:
                self._end_text()
                lead = _SEPARATOR          # written with the part's first bytes: one scanner call
                self._last_part = part
                self._text = Utf16Text() if chunk.kind in _TEXT_KINDS else None
            text = self._text
            data = chunk.data if text is None else text.feed(chunk.data)
            if data:
                scanner.write(lead + ascii_digits_utf8(data) if lead else ascii_digits_utf8(data))
            elif lead:
                scanner.write(lead)

    def _end_text(self) -> None:
        """The current text ended: write what its UTF-16 check still holds."""
        text = self._text
        if text is not None:
            self._text = None
            data = text.close()
            if data:
                self.scanner.write(ascii_digits_utf8(data))  # type: ignore[union-attr]

    def _feed_hello(self, data: memoryview | bytes) -> None:
        hello = self._hello
        hello += data[:MAX_CLIENT_HELLO - len(hello)]
        sni = client_hello_sni(hello)
        if sni is None:
            if len(hello) >= MAX_CLIENT_HELLO:
                self.anomalies["app.tls.hello_too_large"] += 1
                self._sni_pending = False
                self._hello = bytearray()
            return
        self._sni_pending = False
        self._hello = bytearray()
        if sni is not False:
            self.sni = sni

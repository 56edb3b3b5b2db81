"""SMTP content extraction: turns the client side of an SMTP connection into decoded content chunks.

What it does
------------
`SmtpParser` has the same sans-IO interface as `agent.apps.http.HttpParser`: TCP reassembly hands
it each direction's bytes in order, in pieces of any size (one byte at a time works), with
explicit holes (`gap`), and it returns `Chunk`s (the NamedTuple of `agent.apps.http`):

- ``smtp.envelope``: the address of each ``MAIL FROM:`` / ``RCPT TO:`` command (commands are
  case-insensitive; pipelined commands in one piece are fine), each in its own part;
- ``smtp.header``: the values of Subject, From, To, Cc and Reply-To of each completed message
  (and of messages attached as message/rfc822), RFC 2047 encoded-words decoded to UTF-8, all
  values of one (sub)message in one part, each ending with ``\\n``;
- ``smtp.body``: every text part (text/*, application/json, xml, csv and their +json/+xml
  variants, attachments included) with its Content-Transfer-Encoding undone and transcoded from
  its charset (GBK family → gb18030, UTF-16, any Python codec) to UTF-8, one part each, ending
  with ``\\n``. Binary parts (images, zip, octet-stream, ...) are skipped and counted.

Messages come with ``DATA`` (until a line holding a single ``.``, dot-stuffing undone) or with
``BDAT n [LAST]`` chunks (exactly n bytes each, complete at LAST). A message is buffered (up
to `SmtpLimits.message_bytes`; beyond, the rest is dropped and ``limit.smtp_message`` counted)
and parsed with the stdlib ``email`` package (compat32 policy: the same parts as the default
policy at a tenth of the cost, since only raw header values are used) when it ends, or at
`close()` if it never does.

MIME limits (`SmtpLimits.mime_parts`, `mime_depth`, named and counted like HTTP multipart's
`HttpLimits.multipart_parts` / `multipart_depth`): the stdlib parser costs about 0.3 ms per
part and recurses per nesting level (a RecursionError near 1000 levels would lose the whole
message), so the limits are enforced *before* it runs. One pass over the message finds the
declared boundaries and the delimiter lines that use them; at the delimiter that would open
part number ``mime_parts + 1`` (``limit.mime_parts``) or nest deeper than ``mime_depth``
(``limit.mime_depth``) the message is cut: what comes before is parsed as usual and what comes
after is emitted undecoded as one more ``smtp.body`` part, so the scanner still sees its text
(as HTTP does with multipart past its depth). An attached message/rfc822 that was itself
encoded is parsed the same way, within the same part count and one level deeper.

The server direction emits nothing; it is only followed to pair replies with commands: a
non-354 reply to DATA cancels the message, and 220 to STARTTLS turns the connection into TLS,
after which nothing more is emitted (``app.smtp.starttls``). TLS is also recognised when the
client, after STARTTLS, starts sending a TLS record (for when only the client side is seen).

Recovery: a line that is not a command (garbage) counts ``app.smtp.parse_error``, a hole counts
``app.smtp.gap``; either way the message in progress is dropped and the client side resyncs at
the next line that is a well-formed command.

What it does not do
-------------------
Emit AUTH exchanges (credentials are not our business), raw 8-bit header values in a charset
other than UTF-8 (passed through as they are), RFC 2231 attachment file names, BURL, CHUNKING
with binary MIME (parsed like any message), and it does not check replies besides 354 and 220.

Anomalies: app.smtp.parse_error, app.smtp.gap, app.smtp.starttls, app.smtp.binary_part,
limit.smtp_message, limit.mime_parts, limit.mime_depth.
"""

from __future__ import annotations

import binascii
import email.policy
import quopri
import re
from collections import Counter, deque
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesFeedParser

from agent.apps.charsets import codec_for
from agent.apps.http import Chunk, HttpLimits

__all__ = ["Chunk", "SmtpLimits", "SmtpParser", "TOSERVER", "TOCLIENT"]

TOSERVER = 0
TOCLIENT = 1

_LINE_MAX = 4096            # command / reply line; beyond: garbage
_MAX_PENDING = 1024         # commands awaiting a reply


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    message_bytes: int = 32 << 20                       # one message as buffered; beyond: dropped
    mime_parts: int = HttpLimits().multipart_parts      # MIME parts per message, nested ones included
    # Nested multipart levels and attached messages. Deeper than HTTP's form uploads: a reply to
    # a forwarded message is mixed > message/rfc822 > mixed > alternative > related already.
    mime_depth: int = 10


# MIME boundary parameters (RFC 2046 5.1.1: 1-70 characters; quoted ones may hold spaces).
_BOUNDARY_PARAM = re.compile(rb'(?i)boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))')
_DELIMITER_MAX = 3 + 200 + 2 + 16    # "\n--", boundary, "--", transport padding
_REGENERATE = email.policy.compat32.clone(mangle_from_=False)   # re-serialize parsed text as it was

_KNOWN = frozenset((
    b"HELO", b"EHLO", b"LHLO", b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET", b"NOOP", b"QUIT",
    b"VRFY", b"EXPN", b"HELP", b"STARTTLS", b"AUTH", b"TURN", b"ETRN", b"ATRN", b"SEND", b"SOML",
    b"SAML", b"BURL", b"XCLIENT", b"XFORWARD",
))
# Strict forms accepted when resyncing, so that message text starting with a word is not taken
# for a command.
_RESYNC = re.compile(
    rb"(?i)(?:(?:HELO|EHLO|LHLO) [!-~]+|MAIL FROM: ?<[^\s<>]*>(?: [!-~]+)*|RCPT TO: ?<[^\s<>]+>(?: [!-~]+)*"
    rb"|DATA|BDAT \d{1,18}(?: LAST)?|RSET|NOOP|QUIT|STARTTLS|AUTH [A-Z0-9_-]+(?: [!-~]+)?) *\r?\n")
_PRINTABLE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\r?\n")
_VERB = re.compile(rb"[A-Za-z]{3,16}")
_MAIL = re.compile(rb"(?i)MAIL\s+FROM\s*:\s*(.*)")
_RCPT = re.compile(rb"(?i)RCPT\s+TO\s*:\s*(.*)")
_BDAT = re.compile(rb"(?i)BDAT\s+(\d{1,18})(\s+LAST)?\s*")
_REPLY = re.compile(rb"(\d{3})([ -]|\r?\n)")
_UNFOLD = re.compile(r"\r?\n(?=[ \t])")

_HEADERS = frozenset(("subject", "from", "to", "cc", "reply-to"))
_TEXT_APP = frozenset(("application/json", "application/xml", "application/csv", "application/x-csv",
                       "application/x-ndjson", "application/ndjson", "application/javascript"))

# client states
_C_CMD, _C_DATA, _C_BDAT, _C_RESYNC, _C_TLS = range(5)


def _to_utf8(data: bytes, charset: str | None) -> bytes:
    codec = codec_for(charset)
    if codec is None:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            codec = "utf-16"
        elif data[:3] == b"\xef\xbb\xbf":
            return data[3:]
        else:
            return data
    return data.decode(codec, "replace").encode("utf-8")


def _encoded_attachment(part: Message, sub: list[Message]) -> bytes | None:
    """The decoded bytes of a message/rfc822 sent base64 or quoted-printable (RFC 2046 forbids it;
    some mailers do it), else None. The email package parses message/* payloads as a message
    whatever their encoding, so what it holds is the *encoded* text: regenerate it and decode."""
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte not in ("base64", "quoted-printable") or len(sub) != 1 or not isinstance(sub[0], Message):
        return None
    encoded = sub[0].as_bytes(policy=_REGENERATE)
    if cte == "quoted-printable":
        return quopri.decodestring(encoded.lstrip(b"\r\n"))
    try:
        return binascii.a2b_base64(b"".join(encoded.split()))
    except binascii.Error:
        return None                        # not base64 after all: walk it as the text it is


def _is_text(ctype: str) -> bool:
    return (ctype.startswith("text/") or ctype in _TEXT_APP
            or ctype.endswith(("+json", "+xml")))


def _header_text(value: str) -> str:
    """A raw header value → text with RFC 2047 encoded-words decoded."""
    value = _UNFOLD.sub("", value).strip()
    if "=?" not in value:
        return value
    try:
        pieces = decode_header(value)
    except Exception:  # noqa: BLE001 - malformed encoded-words: keep the raw value
        return value
    fixed = []
    for data, cs in pieces:
        if isinstance(data, str):
            fixed.append((data, cs))
            continue
        codec = codec_for(cs) or "utf-8"
        fixed.append((data.decode(codec, "replace"), None))
    try:
        return str(make_header(fixed))
    except Exception:  # noqa: BLE001
        return "".join(d if isinstance(d, str) else d.decode("latin-1") for d, _ in fixed)


class SmtpParser:
    """Both directions of one SMTP connection → decoded content chunks (see module docstring)."""

    def __init__(self, anomalies: Counter[str], limits: SmtpLimits = SmtpLimits()) -> None:
        self.anomalies = anomalies
        self.limits = limits
        self._closed = False
        self._part = 0
        self._mime_parts = 0              # MIME parts of the message being emitted
        self._out: list[Chunk] = []
        # client side
        self._state = _C_CMD
        self._line = bytearray()          # incomplete command line (bounded)
        self._line_long = False           # current line exceeded _LINE_MAX: skipping to its end
        self._msg: bytearray | None = None  # message being received (DATA or BDAT chunks)
        self._msg_over = False
        self._data_bytes = 0              # bytes received since DATA (to undo DATA on a refusal)
        self._bol = True                  # DATA: at the start of a line
        self._pend = b""                  # DATA: "." or ".\r" at a line start, undecided
        self._remaining = 0               # BDAT: bytes left in the chunk
        self._last = False                # BDAT: this chunk ends the message
        self._auth = False                # after AUTH: non-command lines are its responses
        self._starttls = False            # STARTTLS sent, no reply yet
        # server side
        self._sline = bytearray()
        self._slong = False
        self._pending: deque[bytes] = deque([b""], maxlen=_MAX_PENDING)  # b"": the greeting

    # -- public -------------------------------------------------------------------------------

    def feed(self, direction: int, data: bytes | memoryview) -> list[Chunk]:
        out = self._out = []
        if not data or self._closed or self._state == _C_TLS:
            return out
        if direction == TOSERVER:
            self._client(bytes(data))
        else:
            self._server(bytes(data))
        return out

    def gap(self, direction: int, nbytes: int) -> list[Chunk]:
        out = self._out = []
        if self._closed or self._state == _C_TLS:
            return out
        self.anomalies["app.smtp.gap"] += 1
        if direction == TOSERVER:
            self._drop()
            self._line.clear()
            self._line_long = False
            self._state = _C_RESYNC
        else:
            self._sline.clear()
            self._slong = False
            self._pending.clear()         # replies can no longer be paired with commands
        return out

    def close(self) -> list[Chunk]:
        out = self._out = []
        if self._closed:
            return out
        self._closed = True
        if self._state != _C_TLS and self._msg is not None:
            if self._state == _C_DATA and self._pend:
                self._append(self._pend[1:])  # a lone "." or ".\r" at a line start: dot-stuffing
            self._finish()
        self._msg = None
        return out

    # -- client -------------------------------------------------------------------------------

    def _client(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            st = self._state
            if st == _C_DATA:
                pos = self._data(data, pos)
            elif st == _C_BDAT:
                take = min(self._remaining, n - pos)
                self._append(data[pos:pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _C_CMD
                    if self._last:
                        self._finish()
            elif st == _C_TLS:
                return
            else:
                if (st == _C_CMD and self._starttls and not self._line and not self._line_long
                        and data[pos] == 0x16):
                    self._tls()               # a TLS record after STARTTLS: the server said 220
                    return
                pos = self._command(data, pos)

    def _command(self, data: bytes, pos: int) -> int:
        """Accumulate a command line; at its end, act on it. Returns the new position."""
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        if not self._line_long:
            self._line += data[pos:end]
            if len(self._line) > _LINE_MAX:
                self._line.clear()
                self._line_long = True
                self._garbage()
        if nl < 0:
            return end
        line = bytes(self._line)
        self._line.clear()
        if self._line_long:
            self._line_long = False
            return end
        if self._state == _C_RESYNC:
            if _RESYNC.fullmatch(line) is None:
                return end
            self._state = _C_CMD
            self._auth = False
        self._on_line(line)
        return end

    def _on_line(self, line: bytes) -> None:
        text = line.rstrip(b"\r\n")
        if not text.strip():
            return                            # stray empty line: tolerated
        if _PRINTABLE.fullmatch(line) is None:
            self._garbage()
            return
        m = _VERB.match(text)
        verb = m.group(0).upper() if m is not None and (m.end() == len(text) or text[m.end()] in b" \t:") else b""
        if verb not in _KNOWN:
            if self._auth:
                return                        # an AUTH response (credentials): not emitted
            self._garbage()
            return
        self._auth = False
        self._starttls = False
        self._pending.append(verb)
        if verb == b"MAIL":
            self._drop()
            mm = _MAIL.fullmatch(text)
            if mm is not None:
                self._envelope(mm.group(1))
        elif verb == b"RCPT":
            mm = _RCPT.fullmatch(text)
            if mm is not None:
                self._envelope(mm.group(1))
        elif verb == b"DATA":
            self._drop()
            self._msg = bytearray()
            self._msg_over = False
            self._data_bytes = 0
            self._bol = True
            self._pend = b""
            self._state = _C_DATA
        elif verb == b"BDAT":
            mm = _BDAT.fullmatch(text)
            if mm is None:
                self._garbage()
                return
            if self._msg is None:
                self._msg = bytearray()
                self._msg_over = False
            self._remaining = int(mm.group(1))
            self._last = mm.group(2) is not None
            if self._remaining:
                self._state = _C_BDAT
            elif self._last:
                self._finish()
        elif verb == b"RSET" or verb == b"QUIT":
            self._drop()
        elif verb == b"STARTTLS":
            self._starttls = True
        elif verb == b"AUTH":
            self._auth = True

    def _data(self, data: bytes, pos: int) -> int:
        """DATA message bytes: undo dot-stuffing, stop at a line holding a single dot."""
        self._data_bytes += len(data) - pos
        if self._pend:
            pend = self._pend
            self._pend = b""
            return pos - len(pend) + self._data_run(pend + data[pos:], 0)
        return self._data_run(data, pos)

    def _data_run(self, data: bytes, pos: int) -> int:
        n = len(data)
        while pos < n:
            if self._bol:
                if data[pos] != 0x2E:         # not a dot
                    self._bol = False
                    continue
                if pos + 1 >= n:
                    self._pend = data[pos:]
                    return n
                c = data[pos + 1]
                if c == 0x0A:
                    self._end_data()
                    return pos + 2
                if c == 0x0D:
                    if pos + 2 >= n:
                        self._pend = data[pos:]
                        return n
                    if data[pos + 2] == 0x0A:
                        self._end_data()
                        return pos + 3
                pos += 1                      # dot-stuffing: the leading dot goes
                self._bol = False
                continue
            i = data.find(b"\n.", pos)
            if i < 0:
                self._append(data[pos:])
                self._bol = data[n - 1] == 0x0A
                return n
            self._append(data[pos:i + 1])
            pos = i + 1
            self._bol = True
        return n

    def _end_data(self) -> None:
        self._state = _C_CMD
        self._pending.append(b".")            # the server replies to the message too
        self._finish()

    def _append(self, b: bytes) -> None:
        msg = self._msg
        if msg is None or self._msg_over or not b:
            return
        room = self.limits.message_bytes - len(msg)
        if len(b) > room:
            msg += b[:max(0, room)]
            self._msg_over = True
            self.anomalies["limit.smtp_message"] += 1
            return
        msg += b

    def _drop(self) -> None:
        self._msg = None
        self._msg_over = False
        self._pend = b""
        if self._state in (_C_DATA, _C_BDAT):
            self._state = _C_CMD

    def _garbage(self) -> None:
        if self._state != _C_RESYNC:
            self.anomalies["app.smtp.parse_error"] += 1
        self._drop()
        self._auth = False
        self._starttls = False
        self._state = _C_RESYNC

    def _tls(self) -> None:
        self.anomalies["app.smtp.starttls"] += 1
        self._msg = None
        self._state = _C_TLS

    # -- server -------------------------------------------------------------------------------

    def _server(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n and self._state != _C_TLS:
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl + 1
            if not self._slong:
                self._sline += data[pos:end]
                if len(self._sline) > _LINE_MAX:
                    self._sline.clear()
                    self._slong = True
            pos = end
            if nl < 0:
                return
            line = bytes(self._sline)
            self._sline.clear()
            if self._slong:
                self._slong = False
                continue
            self._reply(line)

    def _reply(self, line: bytes) -> None:
        m = _REPLY.match(line)
        if m is None or m.group(2) == b"-":
            return                            # not a reply, or a continuation line
        code = m.group(1)
        if code == b"334":
            return                            # AUTH challenge: the AUTH exchange goes on
        if not self._pending:
            return
        cmd = self._pending.popleft()
        if cmd == b"DATA":
            if code != b"354" and self._state == _C_DATA and self._data_bytes == 0 and not self._pend:
                self._drop()                  # refused: the client goes on with commands
        elif cmd == b"STARTTLS":
            if code == b"220":
                self._tls()
            else:
                self._starttls = False

    # -- messages -----------------------------------------------------------------------------

    def _new_part(self) -> int:
        self._part += 1
        return self._part

    def _envelope(self, arg: bytes) -> None:
        arg = arg.strip()
        if arg.startswith(b"<"):
            addr = arg[1:].partition(b">")[0]
        else:
            addr = arg.split(None, 1)[0] if arg else b""
        addr = addr.strip()
        if addr:
            self._out.append(Chunk(TOSERVER, "smtp.envelope", addr + b"\n", self._new_part()))

    def _finish(self) -> None:
        data = self._msg
        self._msg = None
        self._msg_over = False
        self._pend = b""
        if not data:
            return
        self._mime_parts = 0
        try:
            head, rest = self._bounded(bytes(data), 0)
            del data
            self._message(self._parse(head), 0)
            self._passed_through(rest)
        except Exception:  # noqa: BLE001 - the email package on hostile input: count, go on
            self.anomalies["app.smtp.parse_error"] += 1

    @staticmethod
    def _parse(data: bytes) -> Message:
        p = BytesFeedParser(policy=email.policy.compat32)
        p.feed(data)
        return p.close()

    def _bounded(self, data: bytes, depth: int) -> tuple[bytes, bytes]:
        """Split `data` (a message `depth` levels down) where a MIME limit bites: (what the email
        parser gets, what is passed through undecoded). See "MIME limits" in the module docstring."""
        lowered = data.lower()
        declared: set[bytes] = set()
        at = lowered.find(b"boundary")
        while at >= 0:
            m = _BOUNDARY_PARAM.match(data, at)
            if m is not None:
                declared.add(m.group(1) or m.group(2))
            at = lowered.find(b"boundary", at + 8)
        del lowered
        if not declared:
            return data, b""
        limits = self.limits
        open_levels: list[bytes] = []        # boundaries of the multiparts we are inside
        text = b"\n" + data                 # a delimiter line starting at data[i] is at text[i]
        i = text.find(b"\n--")
        while i >= 0:
            end = text.find(b"\n", i + 1, i + _DELIMITER_MAX)
            if end < 0 and len(text) - i >= _DELIMITER_MAX:
                i = text.find(b"\n--", i + 1)       # too long for a delimiter line
                continue
            token = text[i + 3:end if end >= 0 else len(text)].rstrip()
            if token in declared:                    # a part begins
                if token in open_levels:
                    del open_levels[open_levels.index(token) + 1:]   # inner multiparts ended unclosed
                else:
                    open_levels.append(token)
                if self._mime_parts >= limits.mime_parts:
                    self.anomalies["limit.mime_parts"] += 1
                    return data[:i], data[i:]
                if depth + len(open_levels) > limits.mime_depth:
                    self.anomalies["limit.mime_depth"] += 1
                    return data[:i], data[i:]
                self._mime_parts += 1
            elif token.endswith(b"--") and token[:-2] in open_levels:   # a multipart ends
                del open_levels[open_levels.index(token[:-2]):]
            i = text.find(b"\n--", i + 1)
        return data, b""

    def _attached(self, data: bytes, depth: int) -> None:
        """An attached message given as bytes: parsed within the same MIME limits."""
        head, rest = self._bounded(data, depth)
        self._message(self._parse(head), depth)
        self._passed_through(rest)

    def _passed_through(self, rest: bytes) -> None:
        """Message bytes past a MIME limit: not decoded, but still scanned as they are."""
        if rest:
            if not rest.endswith(b"\n"):
                rest += b"\n"
            self._out.append(Chunk(TOSERVER, "smtp.body", rest, self._new_part()))

    def _message(self, msg: Message, depth: int) -> None:
        """A (sub)message: its header values, then its content."""
        values = []
        for name, value in msg.raw_items():
            if name.lower() in _HEADERS and isinstance(value, str):
                text = _header_text(value)
                if text:
                    values.append(text.encode("utf-8", "surrogateescape") + b"\n")
        if values:
            part = self._new_part()
            for v in values:
                self._out.append(Chunk(TOSERVER, "smtp.header", v, part))
        self._content(msg, depth)

    def _content(self, part: Message, depth: int) -> None:
        if depth > self.limits.mime_depth:
            self.anomalies["limit.mime_depth"] += 1
            return
        ctype = part.get_content_type()
        if part.is_multipart():
            sub = part.get_payload()
            if not isinstance(sub, list):
                return
            if part.get_content_maintype() == "message":
                encoded = _encoded_attachment(part, sub)
                if encoded is not None:
                    self._attached(encoded, depth + 1)
                    return
            for s in sub:
                if not isinstance(s, Message):
                    continue
                if part.get_content_maintype() == "message":
                    self._message(s, depth + 1)
                else:
                    self._content(s, depth + 1)
            return
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            return
        if ctype.startswith("message/"):
            # an attached message that the parser kept as one (encoded) payload
            if ctype in ("message/rfc822", "message/global"):
                self._attached(payload, depth + 1)
            return
        if not (_is_text(ctype) or ctype.startswith("multipart/")):
            self.anomalies["app.smtp.binary_part"] += 1
            return
        try:
            charset = part.get_content_charset()
        except Exception:  # noqa: BLE001
            charset = None
        text = _to_utf8(payload, charset)
        if not text:
            return
        if not text.endswith(b"\n"):
            text += b"\n"
        self._out.append(Chunk(TOSERVER, "smtp.body", text, self._new_part()))

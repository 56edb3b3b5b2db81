"""HTTP/1.x content extraction: turns both directions of a connection into decoded content chunks.

What it does
------------
`HttpParser` is sans-IO and incremental (h11-like): TCP reassembly hands it each direction's
bytes in order, in pieces of any size (one byte at a time works), with explicit holes (`gap`).
It returns `Chunk`s of *content* for a Hyperscan stream scanner:

- ``http.uri``: the request target, percent-decoded (``path?query``, ``+`` is a space in the query),
  ending with ``\\n``;
- ``http.header``: values of headers that carry personal data — Cookie/Set-Cookie (percent-decoded),
  Referer/Location (decoded like a target), From, Forwarded, X-Forwarded-For, Content-Disposition
  and custom ``X-*`` headers. Authorization, Proxy-Authorization and X-* headers named like
  credentials (token, key, secret, ...) are *not* emitted: credentials are not our business.
  Each value ends with ``\\n`` so that two values never run together in the scanner;
- ``http.body``: the body after undoing framing (Content-Length, chunked with extensions and
  trailers, read-until-close), Content-Encoding / transfer codings (gzip, deflate zlib-wrapped
  or raw, br, stacked), the charset (GBK family, UTF-16 with or without BOM, any Python codec →
  UTF-8) and the content type (form-urlencoded → percent-decoded, JSON → string escapes resolved,
  multipart → split into parts, each decoded by its own headers; nested up to a depth);
- ``raw``: bytes of a direction that is out of sync (garbage, unparseable message, after a hole),
  passed through unchanged so the scanner still sees them, until a line that looks like a
  request/status line brings the parser back in sync.

``part`` numbers are per direction and increase per message, multipart part and raw episode;
together with ``kind`` they tell the scanner where one text ends and an unrelated one begins.
Within one (direction, kind, part) chunks are consecutive content: the parser never inserts
anything in the middle of content, and concatenating them gives the same bytes whatever the
split points of the input were (the tests check every split point). Every text ends with a
``\\n`` (appended when its content did not end with one) as soon as the parser knows it ended,
so a value at the very end of a message is complete for the scanner at once instead of only
when the next message or the connection's end comes. Decoders keep only small
carries (an incomplete ``%X``, JSON escape, base64 quantum, multipart delimiter); the only
sizeable buffer is a message head, bounded by `HttpLimits.header_bytes`.

Exchange semantics: pipelining, interim 1xx responses (``Expect: 100-continue``), no body for
HEAD responses and 1xx/204/304, request methods paired with responses through a queue, CONNECT
(and 101 Switching Protocols) turn the connection into an opaque tunnel that emits nothing.

What it does not do
-------------------
HTTP/2 and HTTP/0.9; HTML character references and XML entities (passed through as they are);
WebSocket frames after an upgrade; zstd/compress codings (counted
``app.http.encoding_unsupported``, body not emitted); ``Expect: 100-continue`` requests whose body
is never sent (the next request would be read as body); header values in charsets other than
what is on the wire. Bodies past `HttpLimits.body_bytes` and decompression past the output or
ratio limits are skipped (counted) — where exactly a decompression-ratio stop falls depends on
how zlib was fed, so output of a bomb is not split-point invariant (everything else is).

Why not httptools (llhttp)
--------------------------
The framing is written here rather than on httptools, because what this parser must do beyond
a conforming HTTP/1.1 parser is most of the work and llhttp gets in its way: (1) recovery —
after a parse error or a TCP hole we must keep emitting raw bytes and resync at the next
plausible start line, whereas an llhttp parser is dead after an error and we would have to
find the resync point ourselves anyway and re-create parsers; (2) response framing needs the
request method (HEAD, CONNECT), which httptools' response parser cannot be told (its
on_headers_complete return value is fixed); (3) bounds — header size and line limits that
fall back to raw rather than raise; (4) leniency toward real-world traffic (bare LF, obs-fold,
odd header lines) where llhttp is strict; (5) no C-extension dependency. Framing is a small
state machine; body bytes are handled by slicing, so the Python cost is per piece, not per byte.

Anomalies (counted in the shared Counter): app.http.parse_error, app.http.gap,
app.http.connect, app.http.upgrade, app.http.decompress_error, app.http.br_unsupported,
app.http.encoding_unsupported, limit.http_body, limit.http_decompress_ratio,
limit.http_decompressed, limit.multipart_parts, limit.multipart_depth.
"""

from __future__ import annotations

import binascii
import codecs
import re
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from typing import NamedTuple, Protocol
from urllib.parse import unquote_to_bytes

from agent.apps.charsets import codec_for

try:  # optional: without it, br bodies are counted and skipped
    import brotli as _brotli
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None

__all__ = ["Chunk", "HttpLimits", "HttpParser", "TOSERVER", "TOCLIENT"]

TOSERVER = 0
TOCLIENT = 1


class Chunk(NamedTuple):
    direction: int      # 0 = client->server (toserver), 1 = server->client (toclient)
    kind: str           # "http.uri" | "http.header" | "http.body" | "raw"
    data: bytes         # decoded content
    part: int           # which message/part this belongs to


@dataclass(frozen=True, slots=True)
class HttpLimits:
    body_bytes: int = 16 << 20          # decoded body bytes emitted per message; beyond: counted and skipped
    decompressed_bytes: int = 64 << 20  # per message output of gzip/deflate/br
    decompress_ratio: int = 100         # output/input ratio beyond which we stop (gzip bomb)
    header_bytes: int = 64 << 10        # request/status line + headers; beyond → parse error, fall back to raw
    multipart_parts: int = 1000
    multipart_depth: int = 3            # nested multipart


# -- constants ----------------------------------------------------------------------------------

_STEP = 64 << 10              # decompressor output per call: bounds memory whatever the ratio
_RATIO_FLOOR = 1 << 20        # small bodies compress far better than 100:1 (repetitive JSON): ratio
                              # is only judged once this much output exists
_CHUNK_LINE_MAX = 4096        # chunk-size line incl. extensions
_PREFIX_CHECK = 64            # start-line prefix is checked while shorter than this (O(1) per byte)
_MAX_PENDING_METHODS = 1024   # pipelined requests awaiting a response

# Methods accepted when resyncing out of garbage: a stricter test than in sync, so that text that
# merely starts with an upper-case word does not pass for a request.
_KNOWN_METHODS = frozenset((
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT",
    b"MKCALENDAR", b"SEARCH", b"PURGE", b"LINK", b"UNLINK", b"ACL", b"BIND", b"REBIND", b"UNBIND",
    b"MKACTIVITY", b"CHECKOUT", b"MERGE", b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE",
))

_METHOD = re.compile(rb"[A-Z][A-Z0-9_.-]{0,31}")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f]")
_REQUEST_LINE = re.compile(rb"([A-Z][A-Z0-9_.-]{0,31}) +([^\x00-\x20\x7f]+) +HTTP/(\d)\.(\d)[ \t]*\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) +(\d{3})(?:[ \t][^\n]*)?\r?\n")
_STATUS_PREFIX = re.compile(
    rb"H(?:T(?:T(?:P(?:/(?:\d(?:\.(?:\d(?: +(?:\d{1,3}(?:[ \t][^\n]*)?)?)?)?)?)?)?)?)?)?")
_HEAD_END = re.compile(rb"\n\r?\n")
_CHUNK_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")
_PARAM = re.compile(r'\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
# A run of \uXXXX (decoded at once: surrogate pairs inside), or a two-byte escape. Both start
# with a literal backslash, which lets the regex engine skip ahead with a fast prefix search.
_JSON_ESC = re.compile(rb"\\(?:u[0-9A-Fa-f]{4}(?:\\u[0-9A-Fa-f]{4})*|[\s\S])")
_JSON_U_RUN = re.compile(rb"\\u[0-9A-Fa-f]{4}(?:\\u[0-9A-Fa-f]{4})*")
_JSON_SIMPLE = {b'\\"': b'"', b"\\\\": b"\\", b"\\/": b"/", b"\\b": b"\x08", b"\\f": b"\x0c",
                b"\\n": b"\n", b"\\r": b"\r", b"\\t": b"\t"}
_JSON_SIMPLE_NO_BACKSLASH = tuple((k, v) for k, v in _JSON_SIMPLE.items() if k != b"\\\\")
_HEX = frozenset(b"0123456789abcdefABCDEF")

# Header values emitted, by how they are decoded. X-* headers are emitted unless named like
# credentials (credentials are not personal data we report on, and must not end up in findings).
_URL_HEADERS = frozenset((b"referer", b"location", b"content-location"))
_COOKIE_HEADERS = frozenset((b"cookie", b"set-cookie"))
_PLAIN_HEADERS = frozenset((b"from", b"forwarded", b"content-disposition"))
_CREDENTIAL_NAME = re.compile(rb"auth|token|key|secret|signature|password|passwd|csrf|xsrf")

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_UTF16_SNIFF = 64             # bytes looked at to guess the byte order of UTF-16 without a BOM

# framing states
_S_HEAD, _S_LENGTH, _S_CHUNK_SIZE, _S_CHUNK_DATA, _S_CHUNK_END, _S_TRAILER, _S_CLOSE, _S_TUNNEL, _S_RAW = range(9)
# multipart states
_MP_PREAMBLE, _MP_DELIM, _MP_HEADERS, _MP_BODY, _MP_DONE = range(5)


def _brotli_has_limit() -> bool:
    """brotli >= 1.2 bounds output per call; older versions need input fed in small slices."""
    if _brotli is None:
        return False
    try:
        _brotli.Decompressor().process(b"", output_buffer_limit=1)
    except TypeError:
        return False
    except Exception:  # noqa: BLE001 - any other answer means the keyword exists
        return True
    return True


_BROTLI_LIMIT = _brotli_has_limit()


# -- helpers ------------------------------------------------------------------------------------

def _decode_url(target: bytes) -> bytes:
    """Percent-decode a target/URL: the path as is, ``+`` is a space only in the query."""
    path, q, query = target.partition(b"?")
    out = unquote_to_bytes(path)
    if q:
        out += b"?" + unquote_to_bytes(query.replace(b"+", b" "))
    return out


def _parse_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """Header lines → [(lower-case name, value)]; lenient: bare LF, obs-fold, lines without colon skipped."""
    fields: list[tuple[bytes, bytes]] = []
    for line in block.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        if line[0] in (0x20, 0x09):
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, value + b" " + line.strip())
            continue
        name, sep, value = line.partition(b":")
        if sep:
            fields.append((name.strip().lower(), value.strip()))
    return fields


def _host_name(value: bytes) -> str | None:
    """The name in a Host header: lower-case, no port, no trailing dot; None for an address
    literal (the flow's address says more) or an empty or oversized value. Not-ASCII bytes
    are kept escaped, as the TLS SNI is: evidence, not to be dropped."""
    host = value.strip()
    # An address literal ("[v6]", a bare v6 with several colons), or several values
    # (duplicate Host fields are joined with ", "): no one name to go by.
    if not host or host.startswith(b"[") or host.count(b":") > 1 or b"," in host or b" " in host \
            or b"\t" in host:
        return None
    host = host.split(b":", 1)[0].rstrip(b".").lower()
    if not host or len(host) > 253 or host.replace(b".", b"").isdigit():
        return None
    return host.decode("utf-8", "backslashreplace")


def _field_map(fields: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for name, value in fields:
        out[name] = out[name] + b", " + value if name in out else value
    return out


def _parse_params(value: bytes | None) -> tuple[str, dict[str, str]]:
    """``type/sub; a=b; c="d"`` → ("type/sub", {"a": "b", "c": "d"}) (names lower-cased)."""
    if not value:
        return "", {}
    text = value.decode("latin-1")
    head, _, rest = text.partition(";")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(rest):
        v = m.group(2).strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params.setdefault(m.group(1).lower(), v)
    return head.strip().lower(), params


def _is_json(mime: str) -> bool:
    return mime.endswith(("/json", "+json", "/x-ndjson", "/ndjson", "/jsonl", "/json-seq", "/x-json"))


def _is_text(mime: str) -> bool:
    return (not mime or mime.startswith("text/") or mime.endswith(("/xml", "+xml", "/javascript",
                                                                   "/x-javascript", "/ecmascript")))


def _json_unescape(data: bytes, final: bool) -> tuple[bytes, int]:
    """Resolve JSON string escapes in `data`; returns (decoded, consumed).

    Not final: an escape cut by the end of the piece, and a trailing high surrogate (its low
    half may follow), are left unconsumed for the caller to carry (at most 11 bytes). Outside
    strings valid JSON has no backslash, so the text is not parsed, only its escapes resolved.
    """
    cut = len(data) if final else _json_cut(data)
    piece = data[:cut]
    if b"\\" not in piece:
        return piece, cut
    if b"\\\\" not in piece:
        # Fast path: with no escaped backslash every backslash starts an escape, so the two-byte
        # escapes can be replaced independently at C speed; only \u runs need a callback.
        for esc, rep in _JSON_SIMPLE_NO_BACKSLASH:
            if esc in piece:
                piece = piece.replace(esc, rep)
        if b"\\u" in piece:
            piece = _JSON_U_RUN.sub(_u_run_repl, piece)
        return piece, cut
    return _JSON_ESC.sub(_json_repl, piece), cut


def _json_cut(data: bytes) -> int:
    """Where the complete part of a JSON piece ends (see `_json_unescape`)."""
    n = len(data)
    cut = n
    i = data.rfind(b"\\", max(0, n - 5))     # an incomplete escape starts at the last backslash
    if i >= 0 and _escape_starts(data, i):
        tail = data[i + 1:]
        if not tail or (tail[0] == 0x75 and len(tail) < 5 and all(c in _HEX for c in tail[1:])):
            cut = i
    j = cut - 6
    if (j >= 0 and data[j:j + 2] == b"\\u" and data[j + 2] in b"dD" and data[j + 3] in b"89abAB"
            and data[j + 4] in _HEX and data[j + 5] in _HEX and _escape_starts(data, j)):
        cut = j                              # high surrogate: the low half may be in the next piece
    return cut


def _escape_starts(data: bytes, i: int) -> bool:
    """Is the backslash at `i` an escape's first byte (not the second of an escaped backslash)?"""
    j = i
    while j > 0 and data[j - 1] == 0x5C:
        j -= 1
    return (i - j) % 2 == 0


def _json_repl(m: re.Match[bytes]) -> bytes:
    s = m.group()
    if len(s) == 2:
        return _JSON_SIMPLE.get(s, s)        # an invalid escape is kept as it is
    return _decode_u_run(s)


def _u_run_repl(m: re.Match[bytes]) -> bytes:
    return _decode_u_run(m.group())


def _decode_u_run(run: bytes) -> bytes:
    """``\\u5f20\\ud83d\\ude00`` → UTF-8; pairs combine, lone surrogates become U+FFFD."""
    units = bytes.fromhex(run.replace(b"\\u", b"").decode("ascii"))
    return codecs.utf_16_be_decode(units, "replace", True)[0].encode("utf-8")


# -- body pipeline --------------------------------------------------------------------------------

class _Stage(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class _Side:
    """Framing state of one direction."""

    __slots__ = ("direction", "state", "synced", "buf", "line_ok", "remaining", "msg", "next_part",
                 "raw_part", "out", "trailer_bytes")

    def __init__(self, direction: int) -> None:
        self.direction = direction
        self.state = _S_HEAD
        self.synced = True           # False while resyncing: parse errors are not re-counted
        self.buf = bytearray()       # message head / framing line being accumulated
        self.line_ok = False         # the start line in `buf` is complete and valid
        self.remaining = 0           # body or chunk bytes still to come
        self.msg: _Message | None = None
        self.next_part = 0
        self.raw_part = -1
        self.out: list[Chunk] = []
        self.trailer_bytes = 0

    def new_part(self) -> int:
        part = self.next_part
        self.next_part += 1
        return part

    def emit_raw(self, data: bytes) -> None:
        if data:
            self.out.append(Chunk(self.direction, "raw", data, self.raw_part))


class _Sink:
    """Per message: where decoded content goes; enforces the body limit and counts parts."""

    __slots__ = ("side", "limits", "anomalies", "emitted", "stopped", "parts")

    def __init__(self, side: _Side, limits: HttpLimits, anomalies: Counter[str]) -> None:
        self.side = side
        self.limits = limits
        self.anomalies = anomalies
        self.emitted = 0
        self.stopped = False
        self.parts = 0

    def emit(self, kind: str, part: int, data: bytes) -> bytes:
        """Emit body content within the limit; returns what was emitted."""
        if self.stopped or not data:
            return b""
        room = self.limits.body_bytes - self.emitted
        if len(data) > room:
            data = data[:room]
            self.stopped = True
            self.anomalies["limit.http_body"] += 1
        if data:
            self.emitted += len(data)
            side = self.side
            side.out.append(Chunk(side.direction, kind, data, part))
        return data

    def meta(self, kind: str, part: int, data: bytes) -> None:
        """URI and header values: small, bounded by the head limit, not counted as body."""
        if data:
            side = self.side
            side.out.append(Chunk(side.direction, kind, data, part))


class _Message:
    __slots__ = ("part", "sink", "stage", "plain")

    def __init__(self, part: int, sink: _Sink, stage: _Stage | None, plain: bool) -> None:
        self.part = part
        self.sink = sink
        self.stage = stage
        self.plain = plain           # no content coding: bytes after a hole are still readable


class _Null:
    __slots__ = ()

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _Emit:
    """End of a pipeline: content chunks of one (kind, part).

    When the text ends (message, part or abandoned body) a ``\n`` is appended unless the text
    already ended with one: a value at the very end of a body is then complete for the scanner
    at once, rather than when the next message (or the connection's end) comes.
    """

    __slots__ = ("sink", "kind", "part", "open")

    def __init__(self, sink: _Sink, kind: str, part: int) -> None:
        self.sink = sink
        self.kind = kind
        self.part = part
        self.open = False            # something was emitted and it did not end with a line break

    def write(self, data: bytes) -> None:
        emitted = self.sink.emit(self.kind, self.part, data)
        if emitted:
            self.open = emitted[-1] != 0x0A

    def close(self) -> None:
        if self.open:
            self.open = False
            self.sink.meta(self.kind, self.part, b"\n")


class _Transcode:
    """Charset → UTF-8, incrementally (a multi-byte character may be split across pieces)."""

    __slots__ = ("nxt", "dec")

    def __init__(self, codec: str, nxt: _Stage) -> None:
        self.nxt = nxt
        self.dec = codecs.getincrementaldecoder(codec)(errors="replace")

    def write(self, data: bytes) -> None:
        text = self.dec.decode(data)
        if text:
            self.nxt.write(text.encode("utf-8", "replace"))

    def close(self) -> None:
        text = self.dec.decode(b"", True)
        if text:
            self.nxt.write(text.encode("utf-8", "replace"))
        self.nxt.close()


class _Sniff:
    """Looks for a BOM at the body start (it overrides the declared charset), then transcodes."""

    __slots__ = ("nxt", "codec", "head", "target")

    def __init__(self, codec: str | None, nxt: _Stage) -> None:
        self.nxt = nxt
        self.codec = codec
        self.head = b""
        self.target: _Stage | None = None

    def write(self, data: bytes) -> None:
        if self.target is not None:
            self.target.write(data)
            return
        head = self.head + data
        if len(head) < 3 and any(bom.startswith(head) for bom in _BOMS):
            self.head = head         # could still be a BOM
            return
        if self.codec == "utf-16" and len(head) < _UTF16_SNIFF and not head.startswith(_BOMS):
            self.head = head         # byte order to be guessed from the first bytes
            return
        self.head = b""
        self._decide(head)

    def _decide(self, head: bytes) -> None:
        codec = self.codec
        if head.startswith(b"\xef\xbb\xbf"):
            codec, head = None, head[3:]
        elif head.startswith(b"\xff\xfe"):
            codec, head = "utf-16-le", head[2:]
        elif head.startswith(b"\xfe\xff"):
            codec, head = "utf-16-be", head[2:]
        elif codec == "utf-16":
            # No BOM: ASCII characters show their zero byte first in big-endian, second in
            # little-endian; without evidence RFC 2781 says big-endian.
            sample = head[:_UTF16_SNIFF]
            zeros_even = sample[0::2].count(0)
            zeros_odd = sample[1::2].count(0)
            codec = "utf-16-le" if zeros_odd > zeros_even else "utf-16-be"
        target = self.target = self.nxt if codec is None else _Transcode(codec, self.nxt)
        if head:
            target.write(head)

    def close(self) -> None:
        if self.target is None:
            if not self.head:
                self.nxt.close()
                return
            self._decide(self.head)
            self.head = b""
        assert self.target is not None
        self.target.close()


class _FormDecode:
    """application/x-www-form-urlencoded: ``+`` → space, ``%XX`` → byte; an incomplete ``%X`` is carried."""

    __slots__ = ("nxt", "carry")

    def __init__(self, nxt: _Stage) -> None:
        self.nxt = nxt
        self.carry = b""

    def write(self, data: bytes) -> None:
        if self.carry:
            data = self.carry + data
        n = len(data)
        cut = n
        if data[n - 1:] == b"%":
            cut = n - 1
        elif data[n - 2:n - 1] == b"%":
            cut = n - 2
        self.carry = data[cut:]
        if cut:
            self.nxt.write(unquote_to_bytes(data[:cut].replace(b"+", b" ")))

    def close(self) -> None:
        if self.carry:
            self.nxt.write(self.carry)     # a dangling "%" or "%X" is literal text
            self.carry = b""
        self.nxt.close()


class _JsonUnescape:
    """Resolves JSON string escapes (``\\uXXXX`` incl. surrogate pairs, ``\\"``, ``\\n`` ...) to UTF-8."""

    __slots__ = ("nxt", "carry")

    def __init__(self, nxt: _Stage) -> None:
        self.nxt = nxt
        self.carry = b""

    def write(self, data: bytes) -> None:
        if self.carry:
            data = self.carry + data
        out, cut = _json_unescape(data, False)
        self.carry = data[cut:]
        if out:
            self.nxt.write(out)

    def close(self) -> None:
        if self.carry:
            out, _ = _json_unescape(self.carry, True)
            self.carry = b""
            self.nxt.write(out)
        self.nxt.close()


class _Base64:
    """Content-Transfer-Encoding: base64, decoded in whole 4-character quanta."""

    __slots__ = ("nxt", "carry")

    def __init__(self, nxt: _Stage) -> None:
        self.nxt = nxt
        self.carry = b""

    def write(self, data: bytes) -> None:
        data = self.carry + data.translate(None, b" \t\r\n")
        k = len(data) & ~3
        self.carry = data[k:]
        if k:
            self.nxt.write(_b64(data[:k]))

    def close(self) -> None:
        if self.carry:
            self.nxt.write(_b64(self.carry + b"=" * (-len(self.carry) % 4)))
            self.carry = b""
        self.nxt.close()


def _b64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


class _QuotedPrintable:
    """Content-Transfer-Encoding: quoted-printable; an ``=`` in the last two bytes is carried."""

    __slots__ = ("nxt", "carry")

    def __init__(self, nxt: _Stage) -> None:
        self.nxt = nxt
        self.carry = b""

    def write(self, data: bytes) -> None:
        data = self.carry + data
        i = data.find(b"=", max(0, len(data) - 2))
        cut = len(data) if i < 0 else i
        self.carry = data[cut:]
        if cut:
            self.nxt.write(binascii.a2b_qp(data[:cut]))

    def close(self) -> None:
        if self.carry:
            self.nxt.write(binascii.a2b_qp(self.carry))
            self.carry = b""
        self.nxt.close()


class _Decompressor:
    """Shared limit bookkeeping of gzip/deflate/br: output cap and output/input ratio (bombs)."""

    __slots__ = ("nxt", "sink", "fed", "out_total", "dead")

    def __init__(self, nxt: _Stage, sink: _Sink) -> None:
        self.nxt = nxt
        self.sink = sink
        self.fed = 0
        self.out_total = 0
        self.dead = False

    def _push(self, out: bytes, consumed: int) -> None:
        limits = self.sink.limits
        self.out_total += len(out)
        if self.out_total > limits.decompressed_bytes:
            out = out[:len(out) - (self.out_total - limits.decompressed_bytes)]
            self.sink.anomalies["limit.http_decompressed"] += 1
            self.dead = True
        elif self.out_total > _RATIO_FLOOR and self.out_total > limits.decompress_ratio * max(consumed, 1):
            self.sink.anomalies["limit.http_decompress_ratio"] += 1
            self.dead = True
            return
        if out:
            self.nxt.write(out)

    def _fail(self) -> None:
        self.sink.anomalies["app.http.decompress_error"] += 1
        self.dead = True

    def close(self) -> None:
        self.nxt.close()


class _Inflate(_Decompressor):
    """gzip (multi-member) and deflate (zlib-wrapped, falling back to raw deflate on a bad header)."""

    __slots__ = ("gzip", "d", "saved")

    def __init__(self, nxt: _Stage, sink: _Sink, gzip: bool) -> None:
        super().__init__(nxt, sink)
        self.gzip = gzip
        self.d = zlib.decompressobj(31 if gzip else 15)
        # deflate: the first bytes are kept until zlib accepted the 2-byte header, to retry as raw
        self.saved: bytes | None = None if gzip else b""

    def write(self, data: bytes) -> None:
        if self.dead or self.sink.stopped:
            return
        saved = self.saved
        if saved is not None:
            saved = self.saved = saved + data
        self.fed += len(data)
        try:
            self._inflate(data)
        except zlib.error:
            if saved is None or self.out_total:
                self._fail()
                return
            self.saved = None          # not zlib-wrapped: raw deflate ("deflate" as IE/IIS send it)
            self.d = zlib.decompressobj(-15)
            try:
                self._inflate(saved)
            except zlib.error:
                self._fail()
            return
        if saved is not None and self.fed >= 2:
            self.saved = None

    def _inflate(self, data: bytes) -> None:
        d = self.d
        while True:
            out = d.decompress(data, _STEP)
            data = d.unconsumed_tail
            if out:
                self._push(out, self.fed - len(data))
                if self.dead or self.sink.stopped:
                    return
            if d.eof:
                rest = d.unused_data
                if not rest:
                    return             # a following write may start another gzip member
                if not self.gzip or not rest.strip(b"\x00"):
                    self.dead = True   # trailing padding/garbage after the stream: ignored
                    return
                d = self.d = zlib.decompressobj(31)   # next gzip member
                data = rest
                continue
            if not data and len(out) < _STEP:
                return


class _Brotli(_Decompressor):
    __slots__ = ("d",)

    def __init__(self, nxt: _Stage, sink: _Sink) -> None:
        super().__init__(nxt, sink)
        assert _brotli is not None
        self.d = _brotli.Decompressor()

    def write(self, data: bytes) -> None:
        if self.dead or self.sink.stopped:
            return
        d = self.d
        try:
            if d.is_finished():
                return                 # trailing bytes after the stream: ignored
            if _BROTLI_LIMIT:
                self.fed += len(data)
                self._push(d.process(data, output_buffer_limit=_STEP), self.fed)
                while not (self.dead or self.sink.stopped) and not d.can_accept_more_data():
                    out = d.process(b"", output_buffer_limit=_STEP)
                    if not out:
                        break
                    self._push(out, self.fed)
            else:  # pragma: no cover - old brotli: small input slices bound the output per call
                for i in range(0, len(data), 256):
                    self.fed += len(data[i:i + 256])
                    self._push(d.process(data[i:i + 256]), self.fed)
                    if self.dead or self.sink.stopped or d.is_finished():
                        break
        except _brotli.error:
            self._fail()


class _Multipart:
    """multipart/*: splits on the boundary while streaming; each part gets its own pipeline.

    The delimiter is searched as ``\\n--boundary`` (a preceding ``\\r`` is dropped from the part),
    so bare-LF senders work too; at most ``len(delimiter)`` bytes are held back between pieces.
    """

    __slots__ = ("sink", "delim", "depth", "buf", "state", "part")

    def __init__(self, sink: _Sink, boundary: bytes, depth: int) -> None:
        self.sink = sink
        self.delim = b"\n--" + boundary
        self.depth = depth
        self.buf = bytearray(b"\n")    # the body starts with a delimiter line, without a line break before it
        self.state = _MP_PREAMBLE
        self.part: _Stage | None = None

    def write(self, data: bytes) -> None:
        if self.state == _MP_DONE or self.sink.stopped:
            return
        self.buf += data
        self._run(False)

    def close(self) -> None:
        if self.state != _MP_DONE and not self.sink.stopped:
            self._run(True)
        if self.part is not None:
            self.part.close()
            self.part = None
        self.state = _MP_DONE
        self.buf = bytearray()

    def _run(self, final: bool) -> None:
        buf = self.buf
        delim = self.delim
        pos = 0
        while True:
            st = self.state
            if st == _MP_BODY or st == _MP_PREAMBLE:
                i = buf.find(delim, pos)
                if i < 0:
                    end = len(buf) if final else max(pos, len(buf) - len(delim))
                    if st == _MP_BODY and end > pos:
                        self.part.write(bytes(buf[pos:end]))  # type: ignore[union-attr]
                    pos = end
                    break
                if st == _MP_BODY:
                    end = i - 1 if i > pos and buf[i - 1] == 0x0D else i
                    if end > pos:
                        self.part.write(bytes(buf[pos:end]))  # type: ignore[union-attr]
                    self.part.close()  # type: ignore[union-attr]
                    self.part = None
                pos = i + len(delim)
                self.state = _MP_DELIM
            elif st == _MP_DELIM:
                if len(buf) - pos < 2:
                    if final:
                        self.state = _MP_DONE
                    break
                if buf[pos:pos + 2] == b"--":
                    self.state = _MP_DONE              # close delimiter: the epilogue is ignored
                    break
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if final or len(buf) - pos > 256:  # not a delimiter line after all: give up
                        self.state = _MP_DONE
                    break
                pos = nl + 1
                self.sink.parts += 1
                if self.sink.parts > self.sink.limits.multipart_parts:
                    self.sink.anomalies["limit.multipart_parts"] += 1
                    self.state = _MP_DONE
                    break
                self.state = _MP_HEADERS
            elif st == _MP_HEADERS:
                if buf.startswith(b"\n", pos) or buf.startswith(b"\r\n", pos):
                    hend = pos + (1 if buf[pos] == 0x0A else 2)   # no part headers at all
                else:
                    if len(buf) - pos < 2 and not final:
                        break
                    m = _HEAD_END.search(buf, pos)
                    if m is None:
                        if final or len(buf) - pos > self.sink.limits.header_bytes:
                            self.state = _MP_DONE
                        break
                    hend = m.end()
                self.part = self._open_part(bytes(buf[pos:hend]))
                pos = hend
                self.state = _MP_BODY
            else:
                pos = len(buf)
                break
        del buf[:pos]

    def _open_part(self, block: bytes) -> _Stage:
        sink = self.sink
        hdr = _field_map(_parse_fields(block))
        part = sink.side.new_part()
        disposition = hdr.get(b"content-disposition")
        if disposition:
            filename = _disposition_filename(disposition)
            if filename:
                sink.meta("http.header", part, filename + b"\n")
        stage = _content_stage(sink, part, hdr.get(b"content-type"), self.depth)
        cte = hdr.get(b"content-transfer-encoding", b"").strip().lower()
        if cte == b"base64":
            stage = _Base64(stage)
        elif cte == b"quoted-printable":
            stage = _QuotedPrintable(stage)
        return stage


def _disposition_filename(value: bytes) -> bytes:
    """filename* (RFC 5987, transcoded to UTF-8) or filename from a Content-Disposition value."""
    _, params = _parse_params(b"x;" + value.partition(b";")[2])
    ext = params.get("filename*")
    if ext:
        charset, _, rest = ext.partition("'")
        _, _, encoded = rest.partition("'")
        raw = unquote_to_bytes(encoded.encode("latin-1"))
        codec = codec_for(charset)
        return raw if codec is None else raw.decode(codec, "replace").encode("utf-8")
    name = params.get("filename")
    return name.encode("latin-1") if name else b""


def _content_stage(sink: _Sink, part: int, ctype: bytes | None, depth: int) -> _Stage:
    """The decoded-body pipeline for a content type (after content codings)."""
    mime, params = _parse_params(ctype)
    emit = _Emit(sink, "http.body", part)
    codec = codec_for(params.get("charset"))
    if mime == "application/x-www-form-urlencoded":
        # The form is ASCII; its %XX bytes are in the charset: percent-decode first, then transcode.
        return _FormDecode(emit if codec is None else _Transcode(codec, emit))
    if mime.startswith("multipart/"):
        boundary = params.get("boundary", "")
        if 0 < len(boundary) <= 200:
            if depth + 1 <= sink.limits.multipart_depth:
                return _Multipart(sink, boundary.encode("latin-1"), depth + 1)
            sink.anomalies["limit.multipart_depth"] += 1
        return emit                    # passed through as is: the scanner still sees the parts
    if _is_json(mime):
        return _Sniff(codec, _JsonUnescape(emit))
    if _is_text(mime):
        return _Sniff(codec, emit)
    return emit if codec is None else _Transcode(codec, emit)


def _body_stage(sink: _Sink, part: int, ctype: bytes | None, codings: list[bytes]) -> tuple[_Stage, bool]:
    """Content codings in the order applied by the sender; the last one is undone first."""
    stage = _content_stage(sink, part, ctype, 0)
    plain = True
    for coding in codings:
        c = coding.strip().lower()
        if c in (b"", b"identity"):
            continue
        plain = False
        if c in (b"gzip", b"x-gzip"):
            stage = _Inflate(stage, sink, True)
        elif c == b"deflate":
            stage = _Inflate(stage, sink, False)
        elif c == b"br":
            if _brotli is None:
                sink.anomalies["app.http.br_unsupported"] += 1
                return _Null(), False
            stage = _Brotli(stage, sink)
        else:
            sink.anomalies["app.http.encoding_unsupported"] += 1
            return _Null(), False
    return stage, plain


# -- the parser -----------------------------------------------------------------------------------

class HttpParser:
    """Both directions of one HTTP/1.x connection → decoded content chunks (see module docstring)."""

    __slots__ = ("anomalies", "limits", "host", "_sides", "_methods", "_closed")

    def __init__(self, anomalies: Counter[str], limits: HttpLimits = HttpLimits()) -> None:
        self.anomalies = anomalies
        self.limits = limits
        self.host: str | None = None             # Host of the connection's first request that has one
        self._sides = (_Side(TOSERVER), _Side(TOCLIENT))
        # Methods of requests whose response has not been seen: HEAD/CONNECT change response framing.
        self._methods: deque[bytes] = deque(maxlen=_MAX_PENDING_METHODS)
        self._closed = False

    # -- public -----------------------------------------------------------------------------

    def feed(self, direction: int, data: bytes | memoryview) -> list[Chunk]:
        side = self._sides[direction]
        out = side.out = []
        if data and not self._closed:
            self._run(side, bytes(data))
        return out

    def gap(self, direction: int, nbytes: int) -> list[Chunk]:
        """A hole of `nbytes` in the stream: the message in progress is abandoned.

        Where the framing tells where the hole ends (inside a Content-Length body or a chunk),
        framing continues and the rest of that body is passed as raw (or dropped if it was
        compressed); anywhere else the direction resyncs at the next plausible start line.
        """
        side = self._sides[direction]
        out = side.out = []
        if self._closed:
            return out
        self.anomalies["app.http.gap"] += 1
        st = side.state
        if st == _S_TUNNEL:
            return out
        msg = side.msg
        if msg is not None and (st == _S_CLOSE or (st in (_S_LENGTH, _S_CHUNK_DATA) and nbytes < side.remaining)):
            if st != _S_CLOSE:
                side.remaining -= nbytes
            if msg.stage is not None:
                msg.stage.close()
            if msg.plain:
                side.raw_part = side.new_part()
                msg.stage = _Emit(msg.sink, "raw", side.raw_part)
            else:
                msg.stage = None
            return out
        if msg is not None and st == _S_LENGTH and nbytes == side.remaining:
            self._end_message(side)      # the hole ends exactly where the next message starts
            return out
        self._drop_message(side)
        if st == _S_HEAD and not side.synced:
            side.emit_raw(bytes(side.buf))  # a candidate line before the hole: raw as it was
        side.buf.clear()
        side.line_ok = False
        side.synced = False
        side.raw_part = side.new_part()
        side.state = _S_HEAD             # the byte after a hole may well start a message
        return out

    def close(self) -> list[Chunk]:
        out: list[Chunk] = []
        if self._closed:
            return out
        self._closed = True
        for side in self._sides:
            side.out = []
            if side.msg is not None:
                self._end_message(side)      # read-until-close bodies end here; truncated ones are flushed
            elif side.state == _S_HEAD and side.buf and not side.synced:
                side.emit_raw(bytes(side.buf))
            side.buf.clear()
            side.state = _S_TUNNEL
            out += side.out
        return out

    # -- framing ----------------------------------------------------------------------------

    def _run(self, side: _Side, data: bytes) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            st = side.state
            if st == _S_LENGTH or st == _S_CHUNK_DATA:
                take = min(side.remaining, n - pos)
                msg = side.msg
                if msg is not None and msg.stage is not None and not msg.sink.stopped:
                    msg.stage.write(data[pos:pos + take])
                pos += take
                side.remaining -= take
                if side.remaining == 0:
                    if st == _S_LENGTH:
                        self._end_message(side)
                    else:
                        side.state = _S_CHUNK_END
            elif st == _S_HEAD:
                pos = self._head(side, data, pos)
            elif st == _S_RAW:
                nl = data.find(b"\n", pos)
                end = n if nl < 0 else nl + 1
                side.emit_raw(data[pos:end])
                if nl >= 0:
                    side.state = _S_HEAD     # at a line start: try it as a start line
                pos = end
            elif st == _S_CLOSE:
                msg = side.msg
                if msg is not None and msg.stage is not None and not msg.sink.stopped:
                    msg.stage.write(data[pos:])
                pos = n
            elif st == _S_TUNNEL:
                return
            else:
                pos = self._line(side, data, pos)

    def _head(self, side: _Side, data: bytes, pos: int) -> int:
        """Accumulate a start line and headers; returns the new position in `data`."""
        n = len(data)
        buf = side.buf
        limit = self.limits.header_bytes
        if not side.line_ok:
            if not buf and side.synced:
                while pos < n and data[pos] in b"\r\n":   # empty lines between messages (RFC 9112 2.2)
                    pos += 1
                if pos == n:
                    return n
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl + 1
            old = len(buf)
            if old + end - pos > limit:
                end = pos + limit + 1 - old
                buf += data[pos:end]
                self._lose_sync(side, bytes(buf))
                return end
            buf += data[pos:end]
            if nl < 0:
                if old < _PREFIX_CHECK and not self._prefix_ok(side, buf):
                    self._lose_sync(side, bytes(buf))
                return end
            if not self._start_line_ok(side, buf):
                self._lose_sync(side, bytes(buf))
                return end
            side.line_ok = True
            pos = end
            if pos == n:
                return n
        # Headers until an empty line. The terminator may straddle what is buffered and `data`.
        old = len(buf)
        e = -1
        k = min(2, old)
        m = _HEAD_END.search(bytes(buf[old - k:]) + data[pos:pos + 2])
        if m is not None:
            e = pos + m.end() - k
        else:
            m = _HEAD_END.search(data, pos, min(n, pos + limit + 1 - old))
            if m is not None:
                e = m.end()
        if e < 0:
            end = min(n, pos + limit + 1 - old)
            buf += data[pos:end]
            if len(buf) > limit:
                self._lose_sync(side, bytes(buf))
            return end
        if old + e - pos > limit:
            buf += data[pos:e]
            self._lose_sync(side, bytes(buf))
            return e
        head = bytes(buf) + data[pos:e]
        buf.clear()
        side.line_ok = False
        self._on_head(side, head)
        return e

    def _prefix_ok(self, side: _Side, buf: bytearray) -> bool:
        """Could this incomplete first line still become a request/status line?"""
        if side.direction == TOSERVER:
            sp = buf.find(b" ")
            method = bytes(buf if sp < 0 else buf[:sp])
            if side.synced:
                if _METHOD.fullmatch(method) is None:
                    return False
            elif sp < 0:
                if not any(known.startswith(method) for known in _KNOWN_METHODS):
                    return False
            elif method not in _KNOWN_METHODS:
                return False
            return sp < 0 or _CTL.search(buf, sp) is None
        return _STATUS_PREFIX.fullmatch(buf.rstrip(b"\r")) is not None

    def _start_line_ok(self, side: _Side, line: bytearray) -> bool:
        if side.direction == TOSERVER:
            m = _REQUEST_LINE.fullmatch(line)
            if m is None:
                return False
            return side.synced or (m.group(1) in _KNOWN_METHODS and m.group(3) == b"1")
        m = _STATUS_LINE.fullmatch(line)
        return m is not None and (side.synced or m.group(1) == b"1")

    def _line(self, side: _Side, data: bytes, pos: int) -> int:
        """Chunk-size line, CRLF after chunk data, trailer lines."""
        n = len(data)
        buf = side.buf
        st = side.state
        nl = data.find(b"\n", pos)
        if nl < 0:
            buf += data[pos:]
            cap = _CHUNK_LINE_MAX if st != _S_TRAILER else self.limits.header_bytes - side.trailer_bytes
            if len(buf) > cap:
                self._lose_sync(side, bytes(buf))
            return n
        whole = bytes(buf) + data[pos:nl + 1] if buf else data[pos:nl + 1]
        buf.clear()
        pos = nl + 1
        line = whole[:-2] if whole.endswith(b"\r\n") else whole[:-1]
        if st == _S_CHUNK_SIZE:
            m = _CHUNK_SIZE.fullmatch(line)
            if m is None:
                if not line.strip():
                    return pos                      # stray empty line before a chunk size: tolerated
                self._lose_sync(side, whole)
                return pos
            size = int(m.group(1), 16)
            if size == 0:
                side.state = _S_TRAILER
                side.trailer_bytes = 0
            else:
                side.remaining = size
                side.state = _S_CHUNK_DATA
        elif st == _S_CHUNK_END:
            if line.strip():
                self._lose_sync(side, whole)        # chunk data longer than announced
            else:
                side.state = _S_CHUNK_SIZE
        else:  # trailer section: fields are not content we report on
            if not line:
                self._end_message(side)
            else:
                side.trailer_bytes += len(whole)
                if side.trailer_bytes > self.limits.header_bytes:
                    self._lose_sync(side, b"")
        return pos

    def _lose_sync(self, side: _Side, pending: bytes) -> None:
        """Parse error: count it (once per episode), emit `pending` raw, resync at the next line start."""
        if side.synced:
            self.anomalies["app.http.parse_error"] += 1
            side.synced = False
            side.raw_part = side.new_part()
        self._drop_message(side)
        side.buf.clear()
        side.line_ok = False
        side.emit_raw(pending)
        side.state = _S_RAW if pending and not pending.endswith(b"\n") else _S_HEAD

    def _drop_message(self, side: _Side) -> None:
        msg = side.msg
        if msg is not None:
            side.msg = None
            if msg.stage is not None:
                msg.stage.close()           # flush carries: the content up to here is genuine

    def _end_message(self, side: _Side) -> None:
        self._drop_message(side)
        side.state = _S_HEAD

    # -- messages ---------------------------------------------------------------------------

    def _on_head(self, side: _Side, head: bytes) -> None:
        first = head.find(b"\n") + 1
        fields = _parse_fields(head[first:])
        hdr = _field_map(fields)
        side.synced = True
        if side.direction == TOSERVER:
            self._on_request(side, head[:first], fields, hdr)
        else:
            self._on_response(side, head[:first], fields, hdr)

    def _on_request(self, side: _Side, line: bytes, fields: list[tuple[bytes, bytes]],
                    hdr: dict[bytes, bytes]) -> None:
        m = _REQUEST_LINE.fullmatch(line)
        assert m is not None
        method, target = m.group(1), m.group(2)
        if self.host is None and b"host" in hdr:
            self.host = _host_name(hdr[b"host"])
        part = side.new_part()
        sink = _Sink(side, self.limits, self.anomalies)
        sink.meta("http.uri", part, _decode_url(target) + b"\n")
        self._emit_fields(sink, part, fields)
        self._methods.append(method)
        if method == b"CONNECT":
            self.anomalies["app.http.connect"] += 1
            side.state = _S_TUNNEL
            return
        self._start_body(side, sink, part, hdr, request=True)

    def _on_response(self, side: _Side, line: bytes, fields: list[tuple[bytes, bytes]],
                     hdr: dict[bytes, bytes]) -> None:
        m = _STATUS_LINE.fullmatch(line)
        assert m is not None
        status = int(m.group(3))
        if status < 200:
            if status == 101:                        # protocol switched: nothing HTTP follows
                self.anomalies["app.http.upgrade"] += 1
                for s in self._sides:
                    s.out = side.out             # what the other side flushes is returned now
                    self._drop_message(s)
                    s.state = _S_TUNNEL
            return                                   # interim (100 Continue, 103): the final one follows
        method = self._methods.popleft() if self._methods else b""
        part = side.new_part()
        sink = _Sink(side, self.limits, self.anomalies)
        self._emit_fields(sink, part, fields)
        if method == b"CONNECT":
            if 200 <= status < 300:
                side.state = _S_TUNNEL
                return
            client = self._sides[TOSERVER]           # refused: the client goes on speaking HTTP
            if client.state == _S_TUNNEL:
                client.state = _S_HEAD
                client.synced = True
        if method == b"HEAD" or status in (204, 304):
            return
        self._start_body(side, sink, part, hdr, request=False)

    def _start_body(self, side: _Side, sink: _Sink, part: int, hdr: dict[bytes, bytes], request: bool) -> None:
        te = hdr.get(b"transfer-encoding")
        codings = [c for c in hdr.get(b"content-encoding", b"").split(b",") if c.strip()]
        if te is not None:
            # Transfer-Encoding wins over Content-Length (RFC 9112 6.3). Transfer codings besides
            # chunked are applied after the content codings, so they are undone first.
            tcs = [c.strip().lower() for c in te.split(b",") if c.strip()]
            chunked = bool(tcs) and tcs[-1] == b"chunked"
            codings += [c for c in tcs if c != b"chunked"]
            stage, plain = _body_stage(sink, part, hdr.get(b"content-type"), codings)
            side.msg = _Message(part, sink, stage, plain)
            side.state = _S_CHUNK_SIZE if chunked else _S_CLOSE
            return
        cl = hdr.get(b"content-length")
        if cl is not None:
            values = {v.strip() for v in cl.split(b",")}
            value = values.pop() if len(values) == 1 else b""
            if not value.isdigit() or len(value) > 18:
                self._lose_sync(side, b"")           # unknown framing: resync at the next start line
                return
            length = int(value)
            if length == 0:
                return
            stage, plain = _body_stage(sink, part, hdr.get(b"content-type"), codings)
            side.msg = _Message(part, sink, stage, plain)
            side.remaining = length
            side.state = _S_LENGTH
            return
        if request:
            return                                   # a request without framing headers has no body
        stage, plain = _body_stage(sink, part, hdr.get(b"content-type"), codings)
        side.msg = _Message(part, sink, stage, plain)
        side.state = _S_CLOSE

    def _emit_fields(self, sink: _Sink, part: int, fields: list[tuple[bytes, bytes]]) -> None:
        for name, value in fields:
            if not value:
                continue
            if name in _COOKIE_HEADERS:
                data = unquote_to_bytes(value)
            elif name in _URL_HEADERS:
                data = _decode_url(value)
            elif name in _PLAIN_HEADERS or name == b"x-forwarded-for" or (
                    name.startswith(b"x-") and _CREDENTIAL_NAME.search(name) is None):
                data = value
            else:
                continue
            sink.meta("http.header", part, data + b"\n")

"""TLS ClientHello parsing: the server name (SNI) a client asks for.

`client_hello_sni` reads TLS records from the start of the client->server byte stream,
gathers the first handshake message across as many records as it was split into (record
fragmentation is a known DPI-evasion trick, and post-quantum key shares make hellos larger
than one TCP segment), and returns the first host_name of the server_name extension.

What it does not do:
- no decryption: with Encrypted Client Hello the result is the outer (public) name, which is
  what the network sees; the inner name is not recoverable;
- only the first ClientHello is read: after a HelloRetryRequest the client must send the same
  server name again (RFC 8446 4.1.2), so the first one is enough;
- no validation of the name (it is reported as sent, A-labels stay A-labels), no checks of
  cipher suites, versions or other extensions, and no state between calls: the caller passes
  the whole stream prefix each time.

Any input, however broken, gives None (more bytes needed) or False (no SNI / not a ClientHello);
nothing raises. The input buffer is only viewed, never copied, unless the hello is spread over
several records (then its fragments are joined once, when complete).
"""

from __future__ import annotations

from typing import Literal

MAX_CLIENT_HELLO = 64 * 1024   # callers stop buffering beyond this; treat larger as no-SNI

_HANDSHAKE = 0x16
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_HOST_NAME = 0
# RFC 5246 6.2.3 allows ciphertext up to 2^14 + 2048; nothing legitimate sends a larger record.
_MAX_RECORD = (1 << 14) + 2048
# Hellos cut into tiny records would otherwise make each call (one per TCP segment) walk
# thousands of headers; real stacks and evasion tools use a handful.
_MAX_RECORDS = 256


def client_hello_sni(data: bytes | bytearray | memoryview) -> str | None | Literal[False]:
    """Parse TLS records from the start of the client->server stream.

    Handles a ClientHello split across several TLS records (record fragmentation) and across TCP
    segments (caller passes the concatenation so far). Returns the SNI host_name (decoded as
    ASCII/IDNA text, lower-cased, without trailing dot) when found, None when more bytes are
    needed, False when the ClientHello is complete and has no SNI or the data is not a TLS
    ClientHello (SSLv2 hello -> False, no SNI possible).
    """
    # `with` releases the view on return: the caller keeps appending to a bytearray it passes
    # us, and a view still alive would make that resize fail.
    with memoryview(data) as view:
        if view.ndim != 1 or view.itemsize != 1:
            return False
        body = _gather_hello(view)
        if body is None or body is False:
            return body
        return _parse_hello(body)


def _gather_hello(view: memoryview) -> memoryview | bytes | None | Literal[False]:
    """The ClientHello body (after its 4-byte handshake header) once all of it is present."""
    fragments: list[memoryview] = []
    have = 0                  # handshake bytes gathered so far
    need = 0                  # 4 + body length, once the handshake header has been read
    pos = 0
    records = 0
    while True:
        if pos + 5 > len(view):
            return None if _prefix_plausible(view[pos:], first=not records) else False
        rtype, major, minor = view[pos], view[pos + 1], view[pos + 2]
        length = view[pos + 3] << 8 | view[pos + 4]
        # A record other than handshake before the hello is complete: not a ClientHello
        # (an SSLv2 hello lands here too, its first byte has the high bit set).
        if rtype != _HANDSHAKE or major != 3 or (not records and minor > 4) or length > _MAX_RECORD:
            return False
        records += 1
        if records > _MAX_RECORDS:
            return False
        fragment = view[pos + 5:pos + 5 + length]      # may be cut short by the end of data
        pos += 5 + length
        if not fragment:
            continue
        fragments.append(fragment)
        have += len(fragment)
        if not need and have >= 4:
            header = fragments[0][:4] if len(fragments[0]) >= 4 else b"".join(fragments)[:4]
            if header[0] != _CLIENT_HELLO:
                return False
            need = 4 + (header[1] << 16 | header[2] << 8 | header[3])
            if need > MAX_CLIENT_HELLO:
                return False
        if need and have >= need:
            if len(fragments) == 1:
                return fragments[0][4:need]
            return b"".join(fragments)[4:need]
        if len(fragment) < length:
            return None                                 # data ends inside this record


def _prefix_plausible(rest: memoryview, *, first: bool) -> bool:
    """Whether a partial record header could still become a handshake record header."""
    if not rest:
        return True
    if rest[0] != _HANDSHAKE:
        return False
    if len(rest) >= 2 and rest[1] != 3:
        return False
    if first and len(rest) >= 3 and rest[2] > 4:
        return False
    return True


def _parse_hello(b: memoryview | bytes) -> str | Literal[False]:
    """SNI from a complete ClientHello body (RFC 8446 4.1.2, RFC 6066 3); False if none or malformed."""
    n = len(b)
    p = 2 + 32                                  # legacy_version, random
    if p >= n:
        return False
    p += 1 + b[p]                               # legacy_session_id
    if p + 2 > n:
        return False
    p += 2 + (b[p] << 8 | b[p + 1])             # cipher_suites
    if p >= n:
        return False
    p += 1 + b[p]                               # legacy_compression_methods
    if p + 2 > n:
        return False                            # no extensions at all (SSL 3.0-style hello)
    end = min(n, p + 2 + (b[p] << 8 | b[p + 1]))
    p += 2
    # Unknown types, GREASE values (0x?A?A) and ECH (0xFE0D) are skipped like any extension.
    while p + 4 <= end:
        ext_type = b[p] << 8 | b[p + 1]
        ext_end = p + 4 + (b[p + 2] << 8 | b[p + 3])
        if ext_end > end:
            return False
        if ext_type == _EXT_SERVER_NAME:
            # Servers reject a hello with two server_name extensions; the first is the one.
            return _server_name(b, p + 4, ext_end)
        p = ext_end
    return False


def _server_name(b: memoryview | bytes, p: int, end: int) -> str | Literal[False]:
    if p + 2 > end:
        return False
    list_end = p + 2 + (b[p] << 8 | b[p + 1])
    if list_end > end:
        return False
    p, end = p + 2, list_end
    while p + 3 <= end:
        name_type = b[p]
        name_end = p + 3 + (b[p + 1] << 8 | b[p + 2])
        if name_end > end:
            return False
        if name_type == _HOST_NAME:
            return _host_text(bytes(b[p + 3:name_end]))
        p = name_end
    return False


def _host_text(raw: bytes) -> str | Literal[False]:
    # RFC 6066 says ASCII (A-labels); some clients send raw UTF-8 anyway, and hostile ones send
    # anything: keep valid UTF-8 readable and escape the rest rather than drop the evidence.
    name = raw.decode("utf-8", "backslashreplace").lower().rstrip(".")
    return name or False

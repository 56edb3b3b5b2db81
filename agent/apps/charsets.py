"""Charsets → UTF-8 for the scanner: declared charsets (`codec_for`) and undeclared UTF-16 (`Utf16Text`).

Everything the classifier scans is UTF-8 (or ASCII): parsers transcode declared charsets
with the codec `codec_for` returns. The GB family maps to gb18030, a superset of GB2312 and
GBK, because servers and mailers routinely label GBK text "gb2312".

Text that nobody declares can still be UTF-16 (a raw TCP upload from a Windows tool, a body
without a charset, a MIME part labelled only text/plain): in it every ASCII digit is followed
(LE) or preceded (BE) by a NUL, so no ASCII pattern matches. `Utf16Text` wraps one such text
(a raw stream direction, one body or part) and decides from its first bytes alone:

- a UTF-16 BOM (FF FE, FE FF) decides at once;
- otherwise, once `SNIFF_BYTES` have arrived (or the text ends with at least 8), the sample
  must look like UTF-16 text: at least a quarter of its 2-byte units are ASCII characters with
  their NUL on one side (and more than three times as many as on the other side), no unit is
  U+0000 (binary data has NUL runs; text has no NUL characters), no control characters other
  than whitespace, and it decodes without a lone surrogate. Random bytes pass this with
  probability well under 1e-20; binary structures with NUL padding fail on the U+0000 units.

Until then at most `SNIFF_BYTES` are held back (nothing is lost: they are replayed in front of
the rest); after the decision each write costs one attribute test when the text is not UTF-16,
and an incremental decode when it is (an odd byte or half a surrogate pair at the end of a
write is carried to the next one, so a value split anywhere is found). Not detected: UTF-16
without a BOM whose first 32 characters are nearly all non-ASCII (e.g. a long run of Chinese),
and UTF-16 that starts in the middle of a stream that was not UTF-16 before.
"""

from __future__ import annotations

import codecs
from functools import lru_cache

GB_FAMILY = frozenset(("gbk", "gb2312", "gb18030", "x-gbk", "cp936", "euc-cn", "csgb2312", "ms936", "windows-936"))
PASS_THROUGH = frozenset(("utf-8", "utf8", "ascii", "us-ascii", "unicode-1-1-utf-8", "x-user-defined"))


@lru_cache(maxsize=128)
def codec_for(charset: str | None) -> str | None:
    """The Python codec to transcode a charset to UTF-8 with; None: pass the bytes through."""
    if not charset:
        return None
    cs = charset.strip().strip("\"'").lower()
    if cs in PASS_THROUGH:
        return None
    if cs in GB_FAMILY:
        return "gb18030"
    try:
        info = codecs.lookup(cs)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name == "utf-8":
        return None        # bytes-to-bytes codecs (base64, zlib) are not charsets
    return info.name


# -- undeclared UTF-16 ------------------------------------------------------------------------

SNIFF_BYTES = 64                 # bytes sampled to recognise UTF-16 without a BOM
_MIN_SAMPLE = 8
_ASCII_TEXT = frozenset(range(0x20, 0x7F)) | frozenset(b"\t\n\r")
_IS_TEXT = bytes(b in _ASCII_TEXT for b in range(256))   # byte -> 1 when ASCII text, else 0
_IS_NUL = bytes(b == 0 for b in range(256))
_CONTROL_CHARS = frozenset(chr(c) for c in range(32) if c not in b"\t\n\r\f\v") | {"\x7f"}
_BOMS = (b"\xff\xfe", b"\xfe\xff")


def utf16_codec(sample: bytes) -> str | None:
    """The UTF-16 codec this text's first bytes are in ("utf-16-le"/"utf-16-be"; "utf-16" when it
    starts with a BOM), or None when they do not look like UTF-16 text (see the module docstring)."""
    if sample[:2] in _BOMS:
        return "utf-16"
    n = len(sample) & ~1
    if n < _MIN_SAMPLE:
        return None
    units = n // 2
    if not isinstance(sample, (bytes, bytearray)):
        sample = bytes(sample)           # a memoryview has no translate()
    # Every datagram is sniffed, so the counts are taken over all units at once: each half
    # (even bytes, odd bytes) becomes one big integer with a 0/1 byte per unit, and the units
    # of a kind are the set bits of an AND of two such integers.
    low, high = sample[0:n:2], sample[1:n:2]
    low_nul = int.from_bytes(low.translate(_IS_NUL))
    high_nul = int.from_bytes(high.translate(_IS_NUL))
    if low_nul & high_nul:
        return None                      # U+0000: binary, not text
    le = (int.from_bytes(low.translate(_IS_TEXT)) & high_nul).bit_count()
    be = (int.from_bytes(high.translate(_IS_TEXT)) & low_nul).bit_count()
    if le * 4 >= units and le > 3 * be:
        codec = "utf-16-le"
    elif be * 4 >= units and be > 3 * le:
        codec = "utf-16-be"
    else:
        return None
    try:
        text = codecs.getincrementaldecoder(codec)("strict").decode(sample[:n])
    except UnicodeDecodeError:
        return None                      # a lone surrogate: not UTF-16 text
    if any(c in _CONTROL_CHARS for c in text):
        return None
    return codec


class Utf16Text:
    """One text on its way to the scanner: passed through, or transcoded from UTF-16 to UTF-8."""

    __slots__ = ("_head", "_decoder", "_decided")

    def __init__(self) -> None:
        self._head = b""
        self._decoder: codecs.IncrementalDecoder | None = None
        self._decided = False

    @property
    def is_utf16(self) -> bool:
        return self._decoder is not None

    def feed(self, data: bytes) -> bytes:
        """Bytes for the scanner (possibly none yet, possibly more than `data`)."""
        if self._decided:
            decoder = self._decoder
            return data if decoder is None else decoder.decode(data).encode("utf-8", "replace")
        head = self._head + data if self._head else data
        if len(head) < SNIFF_BYTES and head[:2] not in _BOMS:
            self._head = head
            return b""
        self._head = b""
        return self._decide(head)

    def close(self) -> bytes:
        """The text ended: what is still held (and the decoder's last characters)."""
        if not self._decided:
            head, self._head = self._head, b""
            out = self._decide(head) if head else b""
        else:
            out = b""
        decoder = self._decoder
        if decoder is not None:
            out += decoder.decode(b"", True).encode("utf-8", "replace")
        return out

    def _decide(self, head: bytes) -> bytes:
        self._decided = True
        codec = utf16_codec(head)
        if codec is None:
            return head
        decoder = self._decoder = codecs.getincrementaldecoder(codec)("replace")
        return decoder.decode(head).encode("utf-8", "replace")


def utf16_to_utf8(data: bytes) -> bytes:
    """A whole text at once (a datagram): transcoded if it is UTF-16, else as it is."""
    codec = utf16_codec(data[:SNIFF_BYTES])
    if codec is None:
        return data
    return data.decode(codec, "replace").encode("utf-8", "replace")

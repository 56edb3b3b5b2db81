"""Fast, zero-copy reader of capture files (classic pcap, pcapng, and either one gzip-compressed).

What it does: maps the file read-only and walks its records with precompiled `struct`
unpackers, yielding `(ts_us, linktype, data)` per packet. `data` is a memoryview slice of
the mapping, so nothing is copied. The format is detected by magic number, never by the file
name. Classic pcap: microsecond and nanosecond magics in both byte orders, plus the 24-byte
record headers of Kuznetzov's patched libpcap (0xa1b2cd34). pcapng: SHB (each section may
switch byte order), IDB with if_tsresol/if_tsoffset, EPB, SPB and the obsolete PB. Every
other block type is skipped by its length. Several interfaces with different link types per
file are supported; a packet naming an interface its section never described is skipped and
counted in `bad_interface`. SPBs carry no timestamp and get the previous packet's. A gzip file is decompressed, streaming, into an anonymous temporary file
(in $TMPDIR, at most MAX_DECOMPRESSED bytes), and that file is mapped, so RAM use stays bounded.

Problems with the file itself (missing, a directory, unreadable, not a capture, header cut
short) raise `UsageError` from `CaptureFile(...)`. Damage found while reading never raises.
Iteration stops, `damage` holds one line saying where and why, and every packet before the
damage has already been yielded. This matches what tshark/capinfos report for damaged files.

Memory: the mapped pages a reader has touched count towards the process's resident set until
the kernel reclaims them, so a replay of a 300 MB file would show 300 MB more RSS than it
uses. Every `RELEASE_EVERY` bytes the reader tells the kernel it no longer needs the pages
more than `RELEASE_LAG` bytes behind it (`madvise(MADV_DONTNEED)`). For a read-only file
mapping that only drops them from this process: a frame slice still held (a reassembly
buffer, the last segment kept to check retransmissions) stays valid, and reading it again
faults the page back in from the page cache.

What it does not do: decode link layers, strip FCS trailers (the FCS bits in the classic pcap
link-type field are ignored), apply the classic header's `thiszone` (libpcap ignores it too),
read other compressions (zstd, lz4, xz, bzip2 are recognised only to name them in the error),
or try to resynchronise after damage. It also cannot protect against another process
truncating the file while it is mapped: the kernel then raises SIGBUS on access.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterator
from math import gcd
from types import TracebackType
from typing import IO

from agent.errors import UsageError

# A gzip bomb, or a huge capture, must not fill the temp disk without limit. Tests lower this.
MAX_DECOMPRESSED = 64 << 30
# No real link layer comes near this; a bigger length means the record header is garbage.
MAX_RECORD = 256 << 20
# libpcap/Wireshark accept records up to 262144 bytes whatever the snaplen says, and real
# captures do contain records longer than their snaplen (see malformed/zk-trunc-* in the corpus).
_MIN_RECORD_LIMIT = 262144
# Enough room for a MAX_RECORD packet plus EPB header and options.
_MAX_BLOCK = MAX_RECORD + (1 << 20)

# Page release behind the reader (see the module docstring). Tests lower these.
RELEASE_EVERY = 32 << 20
RELEASE_LAG = 8 << 20
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)     # absent where the OS has no madvise

# Small input pieces: when zlib raises, the output of the failing call is lost, so this bounds
# how much good data before a corruption goes missing.
_GZIP_CHUNK_IN = 64 << 10
_GZIP_CHUNK_OUT = 4 << 20      # max_length per decompress() call keeps a bomb from exhausting RAM

# magic bytes -> (byte order, nanosecond timestamps, patched 24-byte record header)
_PCAP_MAGICS: dict[bytes, tuple[str, bool, bool]] = {
    b"\xd4\xc3\xb2\xa1": ("<", False, False),
    b"\xa1\xb2\xc3\xd4": (">", False, False),
    b"\x4d\x3c\xb2\xa1": ("<", True, False),
    b"\xa1\xb2\x3c\x4d": (">", True, False),
    b"\x34\xcd\xb2\xa1": ("<", False, True),
    b"\xa1\xb2\xcd\x34": (">", False, True),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_GZIP_MAGIC = b"\x1f\x8b"
_PCAPNG_LE = b"\x4d\x3c\x2b\x1a"     # byte-order magic 0x1A2B3C4D as written by a little-endian host
_PCAPNG_BE = b"\x1a\x2b\x3c\x4d"
# Only to give a helpful message instead of "unknown magic".
_OTHER_COMPRESSIONS: dict[bytes, str] = {
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
    b"\xfd\x37\x7a\x58": "xz",
    b"BZh": "bzip2",
}

_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_PB = 0x00000002
_SPB = 0x00000003
_EPB = 0x00000006
_OPT_END = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14


class _NgStructs:
    """The pcapng unpackers for one byte order; a new section may switch between the two."""

    __slots__ = ("u32", "block", "fast", "idb", "option", "epb", "pb", "tsoffset")

    def __init__(self, order: str) -> None:
        self.u32 = struct.Struct(order + "I").unpack_from
        self.block = struct.Struct(order + "II").unpack_from            # type, total length
        self.fast = struct.Struct(order + "6I").unpack_from             # type, length, EPB ifid, ts hi, ts lo, caplen
        self.idb = struct.Struct(order + "H2xI").unpack_from            # linktype, snaplen
        self.option = struct.Struct(order + "HH").unpack_from           # code, length
        self.epb = struct.Struct(order + "IIIII").unpack_from           # ifid, ts hi, ts lo, caplen, origlen
        self.pb = struct.Struct(order + "H2xIIII").unpack_from          # ifid, (drops), ts hi, ts lo, caplen, origlen
        self.tsoffset = struct.Struct(order + "q").unpack_from


_NG = {"<": _NgStructs("<"), ">": _NgStructs(">")}

# (linktype, snaplen, multiplier, divisor, offset_us): ts_us = ts_units * multiplier // divisor + offset_us
_Interface = tuple[int, int, int, int, int]


def _interface(linktype: int, snaplen: int, tsresol: int, tsoffset: int) -> _Interface:
    units = 1 << (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol
    # Reducing the fraction keeps the common cases (µs, ns) to one or no big-int operation
    # while staying exact: floor(t*a/b) == floor(t*(a/g)/(b/g)).
    g = gcd(1_000_000, units)
    return linktype, snaplen, 1_000_000 // g, units // g, tsoffset * 1_000_000


class CaptureFile:
    """One capture file, opened and validated eagerly in __init__."""

    __slots__ = ("path", "size", "offset", "damage", "bad_interface", "format", "compressed",
                 "linktype", "snaplen", "_mm", "_mv", "_order", "_nanos", "_patched", "_gzip_damage",
                 "_released")

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        self.offset = 0
        self.damage: str | None = None
        self.bad_interface = 0          # pcapng packets naming an interface the section never described
        self.format = ""                # "pcap", "pcap-ns", "pcap-patched" or "pcapng"
        self.compressed = False
        self.linktype = -1              # classic pcap only; pcapng carries one per interface
        self.snaplen = 0
        self._mm: mmap.mmap | None = None
        self._mv: memoryview | None = None
        self._order = "<"
        self._nanos = False
        self._patched = False
        self._gzip_damage: str | None = None
        self._released = 0              # pages before this offset were given back (MADV_DONTNEED)

        fh = self._open()
        try:
            try:
                first = fh.read(2)
            except OSError as exc:
                raise UsageError(f"{path}: read error: {exc.strerror or exc}") from None
            if first == _GZIP_MAGIC:
                self.compressed = True
                plain = self._gunzip(fh)
                fh.close()
                fh = plain
            fh.seek(0)
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                # Only reachable for gzip (the plain case is caught by _open), or a file
                # truncated between stat and here.
                if self._gzip_damage:
                    raise UsageError(f"{path}: {self._gzip_damage}, nothing to read")
                raise UsageError(f"{path}: empty {'after decompression' if self.compressed else 'file'}, "
                                 "not a capture")
            try:
                self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise UsageError(f"{path}: cannot map the file into memory: {exc}") from None
        finally:
            # The mapping holds its own reference to the file, and the anonymous tempfile's
            # space is released when the mapping goes away.
            fh.close()
        self._mv = memoryview(self._mm)
        self.size = len(self._mm)
        try:
            self._read_header()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> IO[bytes]:
        path = self.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot access: {exc.strerror or exc}") from None
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{path}: is a directory, not a capture file")
        if not stat.S_ISREG(st.st_mode):
            # A FIFO would block open() and cannot be mapped anyway.
            raise UsageError(f"{path}: not a regular file")
        if st.st_size == 0:
            raise UsageError(f"{path}: empty file, not a capture")
        try:
            return open(path, "rb")
        except OSError as exc:
            raise UsageError(f"{path}: cannot open: {exc.strerror or exc}") from None

    def _gunzip(self, src: IO[bytes]) -> IO[bytes]:
        """Decompress every gzip member of `src` into an anonymous tempfile, bounded in RAM and size."""
        path = self.path
        src.seek(0)
        try:
            out = tempfile.TemporaryFile()
        except OSError as exc:
            raise UsageError(f"{path}: cannot create a temporary file to decompress into: {exc}") from None
        try:
            self._gunzip_into(src, out)
        except BaseException:
            out.close()
            raise
        return out

    def _gunzip_into(self, src: IO[bytes], out: IO[bytes]) -> None:
        path = self.path
        limit = MAX_DECOMPRESSED
        dec = zlib.decompressobj(31)
        fed = False          # has the current member received any input?
        total = 0
        consumed = 0         # compressed bytes read so far, for the damage message
        head = b""
        checked = False
        while True:
            try:
                data = src.read(_GZIP_CHUNK_IN)
            except OSError as exc:
                raise UsageError(f"{path}: read error: {exc.strerror or exc}") from None
            if not data:
                break
            consumed += len(data)
            while data:
                if not fed and data[:2] != _GZIP_MAGIC[:len(data[:2])]:
                    # Bytes after a complete member that do not start another one: padding or
                    # garbage. gzip(1) ignores them too ("trailing garbage ignored").
                    self._gunzip_done(out, dec, fed, consumed, total)
                    return
                fed = True
                try:
                    piece = dec.decompress(data, _GZIP_CHUNK_OUT)
                except zlib.error as exc:
                    self._gzip_damage = f"gzip data corrupt after {total} decompressed bytes ({exc})"
                    self._gunzip_done(out, dec, False, consumed, total)
                    return
                if piece:
                    total += len(piece)
                    if total > limit:
                        size = f"{limit >> 30} GiB" if limit >= 1 << 30 else f"{limit} bytes"
                        raise UsageError(f"{path}: decompresses to more than {size}; "
                                         "decompress it yourself if this is intended")
                    if not checked:
                        head += piece[:4]
                        if len(head) >= 4:
                            checked = True
                            if head[:4] not in _PCAP_MAGICS and head[:4] != _PCAPNG_MAGIC:
                                raise UsageError(f"{path}: gzip-compressed, but the content is not a "
                                                 "pcap or pcapng capture")
                    try:
                        out.write(piece)
                    except OSError as exc:
                        raise UsageError(f"{path}: cannot write decompressed data to a temporary file: "
                                         f"{exc.strerror or exc}") from None
                if dec.eof:
                    data = dec.unused_data
                    dec = zlib.decompressobj(31)
                    fed = False
                else:
                    data = dec.unconsumed_tail
        self._gunzip_done(out, dec, fed, consumed, total)

    def _gunzip_done(self, out: IO[bytes], dec: zlib._Decompress, fed: bool, consumed: int,
                     total: int) -> None:
        if fed and not dec.eof and self._gzip_damage is None:
            self._gzip_damage = (f"gzip stream ends early after {consumed} compressed bytes "
                                 f"({total} decompressed)")
        try:
            out.flush()
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot write decompressed data to a temporary file: "
                             f"{exc.strerror or exc}") from None

    def _read_header(self) -> None:
        mm = self._mm
        assert mm is not None
        path, size = self.path, self.size
        magic = mm[:4]
        what = "gzip-compressed content" if self.compressed else "file"
        if magic in _PCAP_MAGICS:
            order, self._nanos, self._patched = _PCAP_MAGICS[magic]
            self._order = order
            self.format = "pcap-patched" if self._patched else "pcap-ns" if self._nanos else "pcap"
            if size < 24:
                raise UsageError(f"{path}: truncated pcap header ({size} of 24 bytes)")
            self.snaplen, linkfield = struct.unpack_from(order + "16xII", mm, 0)
            # The upper bits may carry the FCS length; the link type is the low 16.
            self.linktype = linkfield & 0xFFFF
            self.offset = 24
            return
        if magic == _PCAPNG_MAGIC:
            self.format = "pcapng"
            if size < 28:
                raise UsageError(f"{path}: truncated pcapng section header ({size} of at least 28 bytes)")
            bom = mm[8:12]
            if bom == _PCAPNG_LE:
                self._order = "<"
            elif bom == _PCAPNG_BE:
                self._order = ">"
            else:
                raise UsageError(f"{path}: not a capture (pcapng section header with unknown "
                                 f"byte-order magic 0x{bom.hex()})")
            (blen,) = struct.unpack_from(self._order + "I", mm, 4)
            if blen < 28 or blen > size:
                raise UsageError(f"{path}: truncated pcapng section header "
                                 f"(it claims {blen} bytes, the {what} has {size})")
            return
        for prefix, name in _OTHER_COMPRESSIONS.items():
            if magic.startswith(prefix):
                raise UsageError(f"{path}: compressed with {name}; only gzip is supported, "
                                 "decompress it first")
        if self.compressed:
            raise UsageError(f"{path}: gzip-compressed, but the content is not a pcap or pcapng capture")
        raise UsageError(f"{path}: not a pcap or pcapng capture (unknown magic 0x{magic.hex()})")

    # -- reading ---------------------------------------------------------------------------

    def frames(self) -> Iterator[tuple[int, int, memoryview]]:
        """Yield (ts_us, linktype, data) for every packet; stop cleanly at damage (see `damage`).

        Each call starts again from the beginning and resets `offset`, `damage` and
        `bad_interface`. The slices stay valid until `close()`; a consumer that keeps one
        longer keeps the mapping alive (close() then leaves the unmap to the garbage collector).
        """
        if self._mv is None:
            raise ValueError(f"{self.path}: capture file is closed")
        self.damage = None
        self.bad_interface = 0
        self._released = 0
        if self.format == "pcapng":
            self.offset = 0
            return self._pcapng_frames()
        self.offset = 24
        return self._pcap_frames()

    def _release(self, off: int) -> int:
        """Give back the mapped pages more than RELEASE_LAG bytes behind `off`; returns the
        offset at which to call again."""
        if _MADV_DONTNEED is None:
            return self.size
        end = (off - RELEASE_LAG) & ~(mmap.PAGESIZE - 1)
        if end > self._released and self._mm is not None:
            try:
                self._mm.madvise(_MADV_DONTNEED, self._released, end - self._released)
            except (OSError, ValueError):     # not supported here: RSS only, never correctness
                return self.size
            self._released = end
        return off + RELEASE_EVERY

    def _finish(self, off: int, damage: str | None) -> None:
        self.offset = off
        if self._gzip_damage:
            damage = f"{damage}; {self._gzip_damage}" if damage else self._gzip_damage
        self.damage = damage

    def _pcap_frames(self) -> Iterator[tuple[int, int, memoryview]]:
        # Everything the loop touches is a local; the only attribute write is `offset`,
        # which costs a few percent and keeps the progress bar exact. Record headers are
        # unpacked from the mmap object itself: unpack_from() gets a buffer from an mmap about
        # 150 ns faster than from a memoryview (measured, CPython 3.11), a third of the
        # per-record budget. Packet data is still sliced from the memoryview: zero copy.
        mm, mv = self._mm, self._mv
        assert mm is not None and mv is not None
        end = self.size
        snaplen = self.snaplen
        limit = min(max(snaplen, _MIN_RECORD_LIMIT), MAX_RECORD)
        rec = struct.Struct(self._order + ("III12x" if self._patched else "III4x"))
        unpack = rec.unpack_from
        hdrlen = rec.size
        last = end - hdrlen
        lt = self.linktype
        off = 24
        damage: str | None = None
        release_at = RELEASE_EVERY
        if self._nanos:
            while off <= last:
                sec, frac, incl = unpack(mm, off)
                if incl > limit:
                    damage = f"record at byte {off} claims {incl} bytes (snaplen {snaplen})"
                    break
                start = off + hdrlen
                off = start + incl
                if off > end:
                    off = start - hdrlen
                    damage = (f"file ends mid-record at byte {off} "
                              f"(record claims {incl} bytes, {end - start} present)")
                    break
                self.offset = off
                if off >= release_at:
                    release_at = self._release(off)
                yield sec * 1_000_000 + frac // 1000, lt, mv[start:off]
        else:
            # An out-of-range microsecond field (>= 10**6) is not damage; the arithmetic still
            # gives the instant the writer meant, as tshark shows it.
            while off <= last:
                sec, frac, incl = unpack(mm, off)
                if incl > limit:
                    damage = f"record at byte {off} claims {incl} bytes (snaplen {snaplen})"
                    break
                start = off + hdrlen
                off = start + incl
                if off > end:
                    off = start - hdrlen
                    damage = (f"file ends mid-record at byte {off} "
                              f"(record claims {incl} bytes, {end - start} present)")
                    break
                self.offset = off
                if off >= release_at:
                    release_at = self._release(off)
                yield sec * 1_000_000 + frac, lt, mv[start:off]
        if damage is None and off < end:
            damage = f"file ends mid-record at byte {off} (only {end - off} bytes of a {hdrlen}-byte record header)"
        self._finish(off, damage)

    def _pcapng_frames(self) -> Iterator[tuple[int, int, memoryview]]:
        mm, mv = self._mm, self._mv     # unpack from mm, slice mv: see _pcap_frames
        assert mm is not None and mv is not None
        end = self.size
        ng = _NG[self._order]
        u32, block, epb, fast = ng.u32, ng.block, ng.epb, ng.fast
        ifaces: list[_Interface] = []
        nifaces = 0
        last_ts = 0          # SPBs carry no timestamp; reuse the latest so time never jumps back to 1970
        off = 0
        damage: str | None = None
        release_at = RELEASE_EVERY
        while True:
            if off >= release_at:
                release_at = self._release(off)
            # Fast path for nearly every block: a well-formed EPB is read with one unpack of its
            # header and fixed fields (about 20% faster than the general path below). Anything
            # else, including a damaged EPB, falls through to be handled and diagnosed there.
            if off + 24 <= end:
                btype, blen, ifid, hi, lo, caplen = fast(mm, off)
                if btype == _EPB:
                    nxt = off + blen
                    if (32 <= blen <= _MAX_BLOCK and nxt <= end and caplen <= blen - 32
                            and u32(mm, nxt - 4)[0] == blen):
                        if ifid >= nifaces:
                            self.bad_interface += 1
                            off = nxt
                            continue
                        lt, _snap, mul, div, tsoff = ifaces[ifid]
                        ts = (hi << 32) | lo
                        if mul != 1:
                            ts *= mul
                        if div != 1:
                            ts //= div
                        last_ts = ts = ts + tsoff
                        start = off + 28
                        off = nxt
                        self.offset = off
                        yield ts, lt, mv[start:start + caplen]
                        continue
            if off + 12 > end:
                if off < end:
                    damage = f"file ends mid-block at byte {off} (only {end - off} bytes of a block header)"
                break
            btype, blen = block(mm, off)
            if btype == _SHB:
                # The byte-order magic, not the previous section, decides how to read this one.
                bom = mv[off + 8:off + 12]
                if bom == _PCAPNG_LE:
                    ng = _NG["<"]
                elif bom == _PCAPNG_BE:
                    ng = _NG[">"]
                else:
                    damage = f"section header at byte {off} has unknown byte-order magic 0x{bom.hex()}"
                    break
                u32, block, epb, fast = ng.u32, ng.block, ng.epb, ng.fast
                btype, blen = block(mm, off)
                if blen < 28:
                    damage = f"section header at byte {off} has invalid length {blen}"
                    break
                ifaces = []
                nifaces = 0
            if blen < 12 or blen > _MAX_BLOCK:
                damage = f"block at byte {off} has invalid length {blen}"
                break
            nxt = off + blen
            if nxt > end:
                damage = f"file ends mid-block at byte {off} (block claims {blen} bytes, {end - off} present)"
                break
            trailer = u32(mm, nxt - 4)[0]
            if trailer != blen:
                damage = f"block at byte {off}: trailing length {trailer} does not match leading length {blen}"
                break

            if btype == _EPB or btype == _PB:
                if blen < 32:
                    damage = f"packet block at byte {off} is too short ({blen} bytes)"
                    break
                if btype == _EPB:
                    ifid, hi, lo, caplen, _orig = epb(mm, off + 8)
                else:
                    ifid, hi, lo, caplen, _orig = ng.pb(mm, off + 8)
                if caplen > blen - 32:
                    damage = (f"packet block at byte {off} claims {caplen} bytes "
                              f"but holds at most {blen - 32}")
                    break
                if ifid >= nifaces:
                    self.bad_interface += 1
                    off = nxt
                    continue
                lt, _snap, mul, div, tsoff = ifaces[ifid]
                ts = (hi << 32) | lo
                if mul != 1:
                    ts *= mul
                if div != 1:
                    ts //= div
                last_ts = ts = ts + tsoff
                start = off + 28
                off = nxt
                self.offset = off
                yield ts, lt, mv[start:start + caplen]
                continue
            if btype == _IDB:
                if blen < 20:
                    damage = f"interface description block at byte {off} is too short ({blen} bytes)"
                    break
                ifaces.append(self._parse_idb(ng, mm, off, nxt - 4))
                nifaces += 1
            elif btype == _SPB:
                if blen < 16:
                    damage = f"simple packet block at byte {off} is too short ({blen} bytes)"
                    break
                if not nifaces:
                    self.bad_interface += 1
                else:
                    orig = u32(mm, off + 8)[0]
                    lt, snap = ifaces[0][0], ifaces[0][1]
                    # SPB has no caplen: the packet is cut to the snaplen, the rest is padding.
                    caplen = min(orig, blen - 16, snap) if snap else min(orig, blen - 16)
                    start = off + 12
                    off = nxt
                    self.offset = off
                    yield last_ts, lt, mv[start:start + caplen]
                    continue
            off = nxt
        self._finish(off, damage)

    @staticmethod
    def _parse_idb(ng: _NgStructs, mm: mmap.mmap, off: int, opt_end: int) -> _Interface:
        linktype, snaplen = ng.idb(mm, off + 8)
        tsresol = 6
        tsoffset = 0
        option = ng.option
        o = off + 16
        # A malformed option list only loses the options; the interface itself is still usable.
        while o + 4 <= opt_end:
            code, olen = option(mm, o)
            o += 4
            if code == _OPT_END or o + olen > opt_end:
                break
            if code == _OPT_IF_TSRESOL and olen >= 1:
                tsresol = mm[o]
            elif code == _OPT_IF_TSOFFSET and olen >= 8:
                tsoffset = ng.tsoffset(mm, o)[0]
            o += (olen + 3) & ~3
        return _interface(linktype, snaplen, tsresol, tsoffset)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release the mapping. Safe to call twice, and while a consumer still holds slices."""
        mv, mm = self._mv, self._mm
        self._mv = self._mm = None
        if mv is not None:
            try:
                mv.release()
            except BufferError:
                pass
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # Someone still holds a frame slice (e.g. a reassembly buffer). The mapping is
                # unmapped when the last slice is garbage-collected; closing now would be a
                # use-after-free, which mmap refuses.
                pass

    def __enter__(self) -> CaptureFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._mv is None else f"{self.size} bytes"
        return f"<CaptureFile {self.path!r} {self.format}{' gzip' if self.compressed else ''} {state}>"

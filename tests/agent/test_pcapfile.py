"""CaptureFile: classic pcap and pcapng (plain and gzip), damage handling, usage errors, and the
third-party corpus. Every capture is built here with struct (or scapy) into tmp_path."""

from __future__ import annotations

import csv
import gzip
import io
import random
import shutil
import struct
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from agent.capture import pcapfile
from agent.capture.pcapfile import CaptureFile
from agent.errors import UsageError

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
MANIFEST = CORPUS / "MANIFEST.tsv"
NO_CORPUS = "third-party pcap corpus not found at ../shared/corpus; see shared/corpus/README.md"

TS0 = 1_700_000_000_123_456          # µs; the µs and ns variants must both give exactly this
PACKETS = [(TS0, b"\x01" * 60), (TS0 + 1_000_001, bytes(range(200))), (TS0 + 2_500_000, b""),
           (TS0 + 3_000_000, b"\xff" * 1514)]


# -- builders -----------------------------------------------------------------------------------

def pcap(packets: list[tuple[int, bytes]], order: str = "<", nanos: bool = False, linktype: int = 1,
         snaplen: int = 65535, sub_us: int = 0, patched: bool = False) -> bytes:
    """Classic pcap; `sub_us` extra nanoseconds per ns timestamp check that they are floored away."""
    magic = 0xA1B2CD34 if patched else 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data in packets:
        sec, us = divmod(ts, 1_000_000)
        frac = us * 1000 + sub_us if nanos else us
        out.append(struct.pack(order + "IIII", sec, frac, len(data), len(data)))
        if patched:
            out.append(struct.pack(order + "iHBx", 3, 0x0800, 0))
        out.append(data)
    return b"".join(out)


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def end_of_options(order: str) -> bytes:
    return struct.pack(order + "HH", 0, 0)


def shb(order: str = "<", options: bytes = b"") -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options)


def idb(order: str = "<", linktype: int = 1, snaplen: int = 0, tsresol: int | None = None,
        tsoffset: int | None = None, name: bytes | None = None) -> bytes:
    opts = b""
    if name is not None:
        opts += option(order, 2, name)
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += end_of_options(order)
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order: str, ifid: int, units: int, data: bytes, options: bytes = b"", caplen: int | None = None) -> bytes:
    body = struct.pack(order + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF,
                       len(data) if caplen is None else caplen, len(data))
    return block(order, 6, body + data + b"\x00" * (-len(data) % 4) + options)


def spb(order: str, orig_len: int, data: bytes) -> bytes:
    return block(order, 3, struct.pack(order + "I", orig_len) + data)


def pb(order: str, ifid: int, units: int, data: bytes) -> bytes:
    body = struct.pack(order + "HHIIII", ifid, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
    return block(order, 2, body + data)


def write(tmp_path: Path, data: bytes, name: str = "cap.bin") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read(path: str) -> tuple[list[tuple[int, int, bytes]], CaptureFile]:
    with CaptureFile(path) as cap:
        frames = [(ts, lt, bytes(data)) for ts, lt, data in cap.frames()]
    return frames, cap


def expected(packets: list[tuple[int, bytes]] = PACKETS, linktype: int = 1) -> list[tuple[int, int, bytes]]:
    return [(ts, linktype, data) for ts, data in packets]


# -- classic pcap -------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_us_and_ns_in_both_byte_orders_give_identical_frames(tmp_path, order, nanos):
    # 999 extra ns prove the ns -> µs conversion floors instead of rounding.
    path = write(tmp_path, pcap(PACKETS, order, nanos, linktype=113, sub_us=999 if nanos else 0))
    frames, cap = read(path)
    assert frames == expected(linktype=113)
    assert cap.damage is None
    assert cap.offset == cap.size == Path(path).stat().st_size
    assert cap.format == ("pcap-ns" if nanos else "pcap")


def test_frames_are_zero_copy_memoryviews(tmp_path):
    with CaptureFile(write(tmp_path, pcap(PACKETS))) as cap:
        data = [d for _, _, d in cap.frames()]
        assert all(isinstance(d, memoryview) for d in data)
        assert data[1].tobytes() == bytes(range(200))
        assert data[0].readonly


def test_detects_format_by_magic_not_name(tmp_path):
    frames, _ = read(write(tmp_path, pcap(PACKETS), name="capture.pcapng.gz"))
    assert frames == expected()
    frames, _ = read(write(tmp_path, shb() + idb() + epb("<", 0, TS0, b"x"), name="capture.pcap"))
    assert frames == [(TS0, 1, b"x")]


def test_linktype_is_low_16_bits_of_header_field(tmp_path):
    fcs_bits = (1 << 28) | (2 << 26)        # "F" flag and FCS length 2 (in 16-bit units)
    frames, _ = read(write(tmp_path, pcap(PACKETS[:1], linktype=fcs_bits | 1)))
    assert frames == expected(PACKETS[:1], 1)


def test_patched_kuznetzov_pcap_with_24_byte_record_headers(tmp_path):
    frames, cap = read(write(tmp_path, pcap(PACKETS, patched=True)))
    assert frames == expected()
    assert cap.damage is None and cap.format == "pcap-patched"


def test_invalid_microseconds_are_computed_arithmetically_not_damage(tmp_path):
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    rec = struct.pack("<IIII", 1000, 1_500_000, 2, 2) + b"ab" + struct.pack("<IIII", 1000, 0x80000000, 1, 1) + b"c"
    frames, cap = read(write(tmp_path, header + rec))
    assert frames == [(1000 * 1_000_000 + 1_500_000, 1, b"ab"), (1000 * 1_000_000 + 0x80000000, 1, b"c")]
    assert cap.damage is None


def test_record_longer_than_snaplen_but_within_262144_is_accepted(tmp_path):
    # libpcap and tshark accept these; the corpus has such files (malformed/zk-trunc-*).
    packets = [(TS0, b"\x00" * 100), (TS0 + 1, b"\x01" * 3000)]
    frames, cap = read(write(tmp_path, pcap(packets, snaplen=64)))
    assert frames == expected(packets)
    assert cap.damage is None


def test_header_only_pcap_yields_nothing(tmp_path):
    frames, cap = read(write(tmp_path, pcap([])))
    assert frames == [] and cap.damage is None and cap.offset == 24


def test_record_claiming_16mb_sets_damage_after_earlier_packets(tmp_path):
    good = pcap(PACKETS[:2])
    bad_at = len(good)
    data = good + struct.pack("<IIII", 1, 0, 16 << 20, 16 << 20) + b"\x00" * 100
    frames, cap = read(write(tmp_path, data))
    assert frames == expected(PACKETS[:2])
    assert cap.damage == f"record at byte {bad_at} claims {16 << 20} bytes (snaplen 65535)"
    assert cap.offset == bad_at


def test_record_over_256mib_is_damage_even_with_huge_snaplen(tmp_path):
    data = pcap(PACKETS[:1], snaplen=0xFFFFFFFF) + struct.pack("<IIII", 1, 0, 300 << 20, 300 << 20)
    frames, cap = read(write(tmp_path, data))
    assert frames == expected(PACKETS[:1])
    assert cap.damage is not None and "claims 314572800 bytes" in cap.damage


def test_file_truncated_mid_record_data_sets_damage(tmp_path):
    full = pcap(PACKETS)
    cut = len(full) - 10            # the last record (1514 bytes) loses its tail
    frames, cap = read(write(tmp_path, full[:cut]))
    assert frames == expected(PACKETS[:3])
    last_record = len(pcap(PACKETS[:3]))
    assert cap.damage is not None
    assert cap.damage.startswith(f"file ends mid-record at byte {last_record}")


def test_file_truncated_mid_record_header_sets_damage(tmp_path):
    full = pcap(PACKETS[:2])
    frames, cap = read(write(tmp_path, full + b"\x00" * 7))
    assert frames == expected(PACKETS[:2])
    assert cap.damage is not None and cap.damage.startswith(f"file ends mid-record at byte {len(full)}")


def test_frames_can_be_iterated_twice_and_offset_progresses(tmp_path):
    with CaptureFile(write(tmp_path, pcap(PACKETS))) as cap:
        offsets = []
        for _ in cap.frames():
            offsets.append(cap.offset)
        assert offsets == sorted(offsets) and offsets[-1] == cap.size
        assert [bytes(d) for _, _, d in cap.frames()] == [d for _, d in PACKETS]


def test_close_is_idempotent_and_tolerates_outstanding_slices(tmp_path):
    cap = CaptureFile(write(tmp_path, pcap(PACKETS)))
    kept = [d for _, _, d in cap.frames()]
    cap.close()                     # must not raise although slices are still alive
    cap.close()
    assert bytes(kept[1]) == bytes(range(200))
    with pytest.raises(ValueError):
        cap.frames()


def test_scapy_wrpcap_roundtrip(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    pkts = []
    for i in range(5):
        p = Ether() / IP(dst="192.0.2.1") / UDP(dport=53) / (b"q" * i)
        p.time = 1_600_000_000 + i / 4
        pkts.append(p)
    path = str(tmp_path / "scapy.pcap")
    wrpcap(path, pkts)
    frames, cap = read(path)
    assert [(ts, lt, data) for ts, lt, data in frames] == \
        [(1_600_000_000_000_000 + i * 250_000, 1, bytes(p)) for i, p in enumerate(pkts)]
    assert cap.damage is None


# -- pcapng ---------------------------------------------------------------------------------------

def test_pcapng_two_interfaces_with_different_linktypes_and_resolutions(tmp_path):
    t_ns = 1_700_000_000_123_456_789                 # if_tsresol 9: nanoseconds
    t_64 = 1_700_000_000 * 64 + 5                    # if_tsresol 0x86: 2^-6 s units
    t_off = 1_000_000 * 1_000_000 + 42               # µs units plus if_tsoffset of 1e9 seconds
    data = (shb() + idb(linktype=1, tsresol=9, name=b"eth0") + idb(linktype=101, tsresol=0x86)
            + idb(linktype=113, tsoffset=1_000_000_000)
            + epb("<", 0, t_ns, b"ether") + epb("<", 1, t_64, b"raw-ip") + epb("<", 2, t_off, b"sll")
            + epb("<", 0, t_ns + 1000, b"ether2"))
    frames, cap = read(write(tmp_path, data))
    assert frames == [
        (1_700_000_000_123_456, 1, b"ether"),
        (1_700_000_000_000_000 + 5 * 15_625, 101, b"raw-ip"),
        (1_000_000 * 1_000_000 + 42 + 1_000_000_000 * 1_000_000, 113, b"sll"),
        (1_700_000_000_123_457, 1, b"ether2"),
    ]
    assert cap.damage is None and cap.bad_interface == 0 and cap.offset == cap.size


def test_pcapng_timestamps_past_2106_are_exact(tmp_path):
    units = (1 << 32) * 1_000_000 + 7                # 2^32 seconds after the epoch, in µs
    frames, _ = read(write(tmp_path, shb() + idb() + epb("<", 0, units, b"late")))
    assert frames == [(units, 1, b"late")]


def test_pcapng_skips_comments_and_unknown_blocks(tmp_path):
    o = "<"
    comment = option(o, 1, b"a comment") + end_of_options(o)
    nrb = block(o, 4, struct.pack("<HH", 1, 8) + bytes([192, 0, 2, 1]) + b"host" + struct.pack("<HH", 0, 0))
    isb = block(o, 5, struct.pack("<III", 0, 0, 0))
    custom = block(o, 0x00000BAD, struct.pack("<I", 32473) + b"vendor stuff")
    dsb = block(o, 0x0000000A, struct.pack("<II", 0x544C534B, 4) + b"keys")
    unknown = block(o, 0x12345678, b"\x00" * 20)
    data = (shb(o, comment) + nrb + idb(o, 1) + custom + epb(o, 0, TS0, b"one", options=comment)
            + isb + dsb + unknown + epb(o, 0, TS0 + 1, b"two"))
    frames, cap = read(write(tmp_path, data))
    assert frames == [(TS0, 1, b"one"), (TS0 + 1, 1, b"two")]
    assert cap.damage is None


def test_pcapng_simple_packet_block_uses_interface_zero(tmp_path):
    o = "<"
    # snaplen 6: the 6 captured bytes of a 100-byte packet are padded to 8 in the block, and
    # only the snaplen tells where the packet ends.
    data = (shb() + idb(o, linktype=101, snaplen=6) + epb(o, 0, TS0, b"first")
            + spb(o, 5, b"short") + spb(o, 100, b"abcdef"))
    frames, cap = read(write(tmp_path, data))
    # SPBs have no timestamp; they reuse the previous packet's so time never runs backwards.
    assert frames == [(TS0, 101, b"first"), (TS0, 101, b"short"), (TS0, 101, b"abcdef")]
    assert cap.damage is None


def test_pcapng_obsolete_packet_block(tmp_path):
    frames, cap = read(write(tmp_path, shb() + idb(linktype=1) + pb("<", 0, TS0, b"old")))
    assert frames == [(TS0, 1, b"old")] and cap.damage is None


def test_big_endian_pcapng(tmp_path):
    o = ">"
    data = shb(o) + idb(o, 1) + idb(o, 101, tsresol=9) + epb(o, 0, TS0, b"be") + epb(o, 1, TS0 * 1000, b"ns")
    frames, cap = read(write(tmp_path, data))
    assert frames == [(TS0, 1, b"be"), (TS0, 101, b"ns")]
    assert cap.damage is None


def test_new_section_switches_byte_order_and_resets_interfaces(tmp_path):
    data = (shb("<") + idb("<", 1) + idb("<", 101) + epb("<", 1, TS0, b"le")
            + shb(">") + idb(">", 113) + epb(">", 0, TS0, b"be") + epb(">", 1, TS0, b"gone"))
    frames, cap = read(write(tmp_path, data))
    assert frames == [(TS0, 101, b"le"), (TS0, 113, b"be")]
    assert cap.bad_interface == 1 and cap.damage is None


def test_packet_with_undefined_interface_is_skipped_and_counted(tmp_path):
    data = shb() + epb("<", 0, TS0, b"no idb yet") + spb("<", 1, b"x") + idb() + epb("<", 3, TS0, b"bad") \
        + epb("<", 0, TS0, b"ok")
    frames, cap = read(write(tmp_path, data))
    assert frames == [(TS0, 1, b"ok")]
    assert cap.bad_interface == 3 and cap.damage is None


@pytest.mark.parametrize("order", ["<", ">"])
def test_empty_pcapng_section_yields_nothing(tmp_path, order):
    frames, cap = read(write(tmp_path, shb(order)))
    assert frames == [] and cap.damage is None
    frames, cap = read(write(tmp_path, shb(order) + idb(order)))
    assert frames == [] and cap.damage is None


def test_scapy_pcapng_writer_roundtrip(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter

    pkts = []
    for i in range(4):
        p = Ether() / IP(dst="198.51.100.9") / TCP(dport=443) / (b"z" * (i * 3))
        p.time = 1_650_000_000 + i
        pkts.append(p)
    path = str(tmp_path / "scapy.pcapng")
    with PcapNgWriter(path) as writer:
        for p in pkts:
            writer.write(p)
    frames, cap = read(path)
    assert frames == [(1_650_000_000_000_000 + i * 1_000_000, 1, bytes(p)) for i, p in enumerate(pkts)]
    assert cap.damage is None and cap.format == "pcapng"


@pytest.mark.parametrize("tail, message", [
    (block("<", 6, b"\x00" * 40)[:30], "file ends mid-block at byte"),
    (struct.pack("<II", 6, 8) + b"\x00" * 8, "has invalid length 8"),
    (struct.pack("<II", 6, 1 << 30) + b"\x00" * 8, "has invalid length"),
    (block("<", 6, b"\x00" * 24)[:-4] + struct.pack("<I", 99), "trailing length 99 does not match"),
    (epb("<", 0, TS0, b"abcd", caplen=5000), "claims 5000 bytes but holds at most 4"),
    (b"\x00" * 5, "file ends mid-block at byte"),
])
def test_pcapng_damage_stops_cleanly_after_earlier_packets(tmp_path, tail, message):
    head = shb() + idb() + epb("<", 0, TS0, b"before")
    after = b"" if "mid-block" in message else epb("<", 0, TS0, b"after")    # never reached
    frames, cap = read(write(tmp_path, head + tail + after))
    assert frames == [(TS0, 1, b"before")]
    assert cap.damage is not None and message in cap.damage, cap.damage
    assert f"byte {len(head)}" in cap.damage


# -- gzip -----------------------------------------------------------------------------------------

def test_gzip_compressed_pcap(tmp_path):
    frames, cap = read(write(tmp_path, gzip.compress(pcap(PACKETS, nanos=True))))
    assert frames == expected()
    assert cap.compressed and cap.damage is None and cap.size == len(pcap(PACKETS, nanos=True))


def test_gzip_compressed_pcapng(tmp_path):
    data = shb() + idb(linktype=101) + epb("<", 0, TS0, b"gz")
    frames, cap = read(write(tmp_path, gzip.compress(data)))
    assert frames == [(TS0, 101, b"gz")] and cap.compressed and cap.damage is None


def test_gzip_with_several_members_and_trailing_zeros(tmp_path):
    raw = pcap(PACKETS)
    data = gzip.compress(raw[:50]) + gzip.compress(raw[50:]) + b"\x00" * 16
    frames, cap = read(write(tmp_path, data))
    assert frames == expected() and cap.damage is None


def test_truncated_gzip_sets_damage_but_yields_what_it_has(tmp_path):
    raw = pcap(PACKETS[:3]) + bytes(range(256)) * 400 + b"tail"
    packed = gzip.compress(raw)
    frames, cap = read(write(tmp_path, packed[: len(packed) * 3 // 4]))
    assert frames[:3] == expected(PACKETS[:3])
    assert cap.damage is not None and "gzip stream ends early" in cap.damage


def test_corrupt_gzip_sets_damage_without_raising(tmp_path):
    rng = random.Random(7)                              # incompressible, so the stream is long
    packets = [(TS0 + i, rng.randbytes(1400)) for i in range(400)]
    packed = bytearray(gzip.compress(pcap(packets)))
    middle = len(packed) // 2
    packed[middle:middle + 64] = b"\xff" * 64
    frames, cap = read(write(tmp_path, bytes(packed)))
    # Random data is stored uncompressed, so the overwritten bytes come out as packet data and
    # only the CRC at the end notices; packets well before the middle are intact.
    assert 150 <= len(frames) < 400
    assert frames[:150] == expected(packets[:150])
    assert cap.damage is not None and "gzip" in cap.damage


def test_gzip_with_garbage_instead_of_deflate_data_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="gzip data corrupt"):
        CaptureFile(write(tmp_path, gzip.compress(pcap(PACKETS))[:10] + b"\xff" * 200))


def test_gzip_of_non_capture_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="gzip-compressed, but the content is not"):
        CaptureFile(write(tmp_path, gzip.compress(b"hello world, this is just text\n" * 100)))


def test_gzip_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(pcapfile, "MAX_DECOMPRESSED", 10_000)
    with pytest.raises(UsageError, match="decompresses to more than"):
        CaptureFile(write(tmp_path, gzip.compress(pcap([(TS0, b"\x00" * 1500)] * 20))))


# -- usage errors ---------------------------------------------------------------------------------

def test_empty_file_is_usage_error(tmp_path):
    path = write(tmp_path, b"")
    with pytest.raises(UsageError, match="empty file, not a capture") as err:
        CaptureFile(path)
    assert path in str(err.value)


def test_text_file_is_usage_error(tmp_path):
    path = write(tmp_path, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", name="notes.pcap")
    with pytest.raises(UsageError, match="not a pcap or pcapng capture") as err:
        CaptureFile(path)
    assert path in str(err.value) and "\n" not in str(err.value)


def test_directory_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        CaptureFile(str(tmp_path))


def test_unreadable_file_is_usage_error(tmp_path, monkeypatch):
    path = write(tmp_path, pcap(PACKETS))

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    # Running as root, chmod 000 would not stop the read; make open() refuse instead.
    monkeypatch.setattr(pcapfile, "open", refuse, raising=False)
    with pytest.raises(UsageError, match="Permission denied") as err:
        CaptureFile(path)
    assert path in str(err.value)


def test_missing_path_is_usage_error(tmp_path):
    path = str(tmp_path / "nope.pcap")
    with pytest.raises(UsageError, match="no such file") as err:
        CaptureFile(path)
    assert path in str(err.value)


@pytest.mark.parametrize("data, message", [
    (pcap([])[:20], "truncated pcap header"),
    (shb()[:20], "truncated pcapng section header"),
    (shb()[:-8], "truncated pcapng section header"),
    (shb()[:8] + b"\x11\x22\x33\x44" + shb()[12:], "unknown byte-order magic"),
    (b"\x28\xb5\x2f\xfd" + b"\x00" * 40, "zstd"),
])
def test_bad_headers_are_usage_errors(tmp_path, data, message):
    with pytest.raises(UsageError, match=message):
        CaptureFile(write(tmp_path, data))


# -- third-party corpus ---------------------------------------------------------------------------

def _corpus_rows() -> list[dict[str, str]]:
    with MANIFEST.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [r for r in rows if not r["path_in_corpus"].endswith((".mmdb", ".md"))]


def _corpus_params() -> list:
    if not MANIFEST.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_CORPUS), id="no-corpus")]
    return [pytest.param(row, id=row["path_in_corpus"]) for row in _corpus_rows()]


@pytest.mark.parametrize("row", _corpus_params())
def test_corpus_frame_counts_match_manifest(row):
    notes = row["tshark_notes"]
    with CaptureFile(str(CORPUS / row["path_in_corpus"])) as cap:
        count = sum(1 for _ in cap.frames())
    if notes == "ok":
        assert count == int(row["packets"])
        assert cap.damage is None
    if "file-damaged" in notes:
        # The count may differ from the manifest: for malformed/sv-fuzz.pcap tshark falls back to
        # guessing another pcap variant (24-byte record headers) after the second record fails,
        # and "reads" one more garbage frame; we stop at the first impossible record.
        assert cap.damage is not None


_TSHARK_ENCAP_TO_LINKTYPE = {1: 1, 15: 0, 25: 113}      # the WTAP_ENCAP values present in the corpus


def _pcapng_corpus_files() -> list:
    if not MANIFEST.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_CORPUS), id="no-corpus")]
    marks = [pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")]
    return [pytest.param(r["path_in_corpus"], id=r["path_in_corpus"], marks=marks)
            for r in _corpus_rows() if r["path_in_corpus"].endswith(".pcapng")]


@pytest.mark.parametrize("name", _pcapng_corpus_files())
def test_corpus_pcapng_timestamps_and_lengths_match_tshark(name):
    # pcapng is where per-interface link types and resolutions matter; compare frame by frame.
    path = str(CORPUS / name)
    out = subprocess.run(["tshark", "-r", path, "-T", "fields", "-e", "frame.time_epoch",
                          "-e", "frame.cap_len", "-e", "frame.encap_type"],
                         capture_output=True, text=True, check=False, timeout=120).stdout
    theirs = []
    for line in out.splitlines():
        epoch, cap_len, encap = line.split("\t")
        theirs.append((int(Decimal(epoch) * 1_000_000), int(cap_len),
                       _TSHARK_ENCAP_TO_LINKTYPE.get(int(encap), -1)))
    with CaptureFile(path) as cap:
        ours = [(ts, len(data), lt if lt in _TSHARK_ENCAP_TO_LINKTYPE.values() else -1)
                for ts, lt, data in cap.frames()]
    assert ours == theirs


def _classic_corpus_files() -> list:
    if not MANIFEST.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_CORPUS), id="no-corpus")]
    return [pytest.param(r["path_in_corpus"], id=r["path_in_corpus"]) for r in _corpus_rows()
            if r["tshark_notes"] == "ok" and ".pcapng" not in r["path_in_corpus"]]


@pytest.mark.parametrize("name", _classic_corpus_files())
def test_corpus_classic_pcap_bytes_match_dpkt(name):
    dpkt = pytest.importorskip("dpkt")
    path = CORPUS / name
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    reader = dpkt.pcap.Reader(io.BytesIO(raw))
    theirs = [(ts, buf) for ts, buf in reader]
    with CaptureFile(str(path)) as cap:
        ours = [(ts, bytes(data)) for ts, _, data in cap.frames()]
        assert cap.linktype == reader.datalink() & 0xFFFF
    assert [d for _, d in ours] == [d for _, d in theirs]
    # dpkt gives float seconds; 2 µs covers the float's precision at today's epoch.
    assert all(abs(a / 1e6 - float(b)) < 2e-6 for (a, _), (b, _) in zip(ours, theirs))


# -- memory: pages behind the reader are given back ---------------------------------------------

def _mapping_rss_kb(path: str) -> int:
    """Resident kB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):     # a mapping's header line
                inside = line.rstrip().endswith(path)
            elif inside and first == "Rss:":
                total += int(line.split()[1])
    return total


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_pages_behind_the_reader_are_released_and_old_frames_stay_valid(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(pcapfile, "RELEASE_EVERY", 1 << 20)
    monkeypatch.setattr(pcapfile, "RELEASE_LAG", 256 << 10)
    rng = random.Random(9)
    packets = [(TS0 + i, rng.randbytes(1400)) for i in range(24_000)]        # ~34 MB
    if kind == "pcap":
        data = pcap(packets)
    else:
        data = shb() + idb() + b"".join(epb("<", 0, ts, frame) for ts, frame in packets)
    path = write(tmp_path, data)
    with CaptureFile(path) as cap:
        kept = []
        peak = 0
        for i, (_ts, _lt, frame) in enumerate(cap.frames()):
            assert frame == packets[i][1]
            if i % 6000 == 0:
                kept.append((i, frame))           # held like a reassembly buffer would
            if i % 1000 == 999:
                peak = max(peak, _mapping_rss_kb(path))
        # Bounded by RELEASE_EVERY + RELEASE_LAG plus what the kernel maps around a fault (2 MiB
        # here), not by the 34 MB read.
        assert 0 < peak <= 8192
        for i, frame in kept:                     # released pages fault back in with the same bytes
            assert frame == packets[i][1]

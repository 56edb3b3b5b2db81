"""Live capture: Linux AF_PACKET with a TPACKET_V3 memory-mapped ring and fanout.

The kernel fills blocks of the ring with many packets and hands a whole block over at once
(or after `block_timeout_ms` when traffic is slow), so reading costs no system call per
packet: `poll()` when the ring is empty, then a walk over the block in the shared mapping.
Each block is copied out once (one memcpy of up to `block_size` bytes) and given straight
back to the kernel: frames are memoryview slices of that copy, so the pipeline may hold on to
them (reassembly queues, defragmentation) after the kernel reuses the ring, and the ring is
never held hostage by a slow flow.

N worker processes each open one socket and join one fanout group with PACKET_FANOUT_HASH and
PACKET_FANOUT_FLAG_DEFRAG: the kernel hashes the flow (after reassembling IP fragments), so
both directions of a connection reach the same worker.

VLAN tags stripped by the NIC/driver (reported in the packet header) are put back into the
frame so the decoder sees what was on the wire. Packets the host itself sent on the capture
interface (PACKET_OUTGOING) are skipped: a span port carries mirrored traffic only, and on a
veth or loopback the same packet would otherwise be seen twice.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from agent.errors import UsageError

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
LINKTYPE_ETHERNET = 1

_REQ3 = struct.Struct("=7I")                 # struct tpacket_req3
_PKT_HDR = struct.Struct("=IIIIIIHHIIH")     # tpacket3_hdr up to tp_vlan_tpid
_SLL_PKTTYPE = 48 + 10                       # sockaddr_ll follows the 48-byte aligned tpacket3_hdr
_STATS3 = struct.Struct("=III")              # tpacket_stats_v3


@dataclass(frozen=True, slots=True)
class RingOptions:
    block_size: int = 1 << 20        # bytes per block (a power of two, multiple of the page size)
    block_count: int = 64            # blocks per ring: 64 MiB per worker by default
    frame_size: int = 1 << 11        # only a sizing hint for TPACKET_V3 (packets are packed)
    block_timeout_ms: int = 50       # the kernel hands over a partly filled block after this
    snaplen: int = 65535             # 0 or larger than a block: the block size bounds it


@dataclass(slots=True)
class KernelStats:
    packets: int = 0
    drops: int = 0
    freezes: int = 0


def compile_bpf(expression: str) -> bytes:
    """Compile a tcpdump filter expression with libpcap (through scapy) for Ethernet frames;
    returns the bytes of a `struct sock_filter` array."""
    try:
        from scapy.arch.common import compile_filter
        program = compile_filter(expression, linktype=LINKTYPE_ETHERNET)
    except ImportError as exc:
        raise UsageError(f"cannot compile --bpf: libpcap is not available ({exc})") from None
    except Exception as exc:          # scapy raises Scapy_Exception with libpcap's message
        raise UsageError(f"bad --bpf expression {expression!r}: {str(exc).strip() or type(exc).__name__}") from None
    count = program.bf_len
    return ctypes.string_at(program.bf_insns, count * 8)


class AfPacketRing:
    """One AF_PACKET socket with a TPACKET_V3 RX ring, bound to one interface."""

    def __init__(self, interface: str, *, fanout_group: int | None = None, promiscuous: bool = True,
                 bpf: bytes | None = None, options: RingOptions = RingOptions()) -> None:
        self.interface = interface
        self.options = options
        self.kernel = KernelStats()
        try:
            self.ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise UsageError(f"no such network interface: {interface}") from None
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise UsageError("opening a capture socket needs CAP_NET_RAW (run as root, or grant the "
                             "capability: see deploy/systemd)") from None
        try:
            self._setup(fanout_group, promiscuous, bpf)
        except BaseException:
            self.sock.close()
            raise

    def _setup(self, fanout_group: int | None, promiscuous: bool, bpf: bytes | None) -> None:
        sock, opts = self.sock, self.options
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        if bpf is not None:
            # Attach before binding so no unfiltered packet reaches the ring in between.
            self._attach_filter(bpf)
        frames = opts.block_size // opts.frame_size * opts.block_count
        try:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ3.pack(
                opts.block_size, opts.block_count, opts.frame_size, frames, opts.block_timeout_ms, 0, 0))
        except OSError as exc:
            raise UsageError(f"cannot set up a {opts.block_count} x {opts.block_size}-byte capture ring: "
                             f"{exc.strerror}") from None
        self.ring = mmap.mmap(sock.fileno(), opts.block_size * opts.block_count, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        sock.bind((self.interface, ETH_P_ALL))
        if promiscuous:
            mreq = struct.pack("=iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            try:
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            except PermissionError:
                raise UsageError("promiscuous mode needs CAP_NET_ADMIN (or use --no-promiscuous on a "
                                 "port that already receives the mirrored traffic)") from None
        if fanout_group is not None:
            value = (fanout_group & 0xFFFF) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16)
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", value))   # > INT_MAX as an int
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self.next_block = 0
        self.read_stats()        # reading resets the kernel counters: start from zero

    def _attach_filter(self, program: bytes) -> None:
        buffer = ctypes.create_string_buffer(program, len(program))
        fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(buffer))   # struct sock_fprog
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def fileno(self) -> int:
        return self.sock.fileno()

    def next_block_frames(self, timeout_ms: int) -> Iterator[tuple[int, int, memoryview]] | None:
        """Frames of the next filled block (copied out, block returned), or None after the timeout."""
        opts = self.options
        base = self.next_block * opts.block_size
        ring = self.ring
        status = struct.unpack_from("=I", ring, base + 8)[0]
        if not status & TP_STATUS_USER:
            if not self.poller.poll(timeout_ms):
                return None
            status = struct.unpack_from("=I", ring, base + 8)[0]
            if not status & TP_STATUS_USER:
                return None
        count, first = struct.unpack_from("=II", ring, base + 12)
        block = ring[base:base + opts.block_size]          # one copy per block, then hand it back
        struct.pack_into("=I", ring, base + 8, TP_STATUS_KERNEL)
        self.next_block = (self.next_block + 1) % opts.block_count
        return _frames(block, count, first)

    def read_stats(self) -> KernelStats:
        """Add the kernel's counters since the last call (reading resets them) and return the totals."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)
        packets, drops, freezes = _STATS3.unpack(raw)
        self.kernel.packets += packets
        self.kernel.drops += drops
        self.kernel.freezes += freezes
        return self.kernel

    def close(self) -> None:
        try:
            self.ring.close()
        except (AttributeError, BufferError):
            pass
        self.sock.close()


def _frames(block: bytes, count: int, offset: int) -> Iterator[tuple[int, int, memoryview]]:
    view = memoryview(block)
    unpack = _PKT_HDR.unpack_from
    end = len(block)
    for _ in range(count):
        if offset <= 0 or offset + 48 > end:
            return                                       # a corrupt block header: stop, never overrun
        (next_offset, sec, nsec, snaplen, _wirelen, status, mac, _net, _rxhash, vlan_tci,
         vlan_tpid) = unpack(block, offset)
        if block[offset + _SLL_PKTTYPE] != PACKET_OUTGOING and offset + mac + snaplen <= end:
            frame = view[offset + mac:offset + mac + snaplen]
            if status & TP_STATUS_VLAN_VALID and snaplen >= 12:
                tpid = vlan_tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                frame = memoryview(bytes(frame[:12]) + struct.pack("!HH", tpid, vlan_tci) + bytes(frame[12:]))
            yield sec * 1_000_000 + nsec // 1000, LINKTYPE_ETHERNET, frame
        if not next_offset:
            return
        offset += next_offset


def open_rings(interface: str, workers: int, *, promiscuous: bool, bpf_expression: str | None,
               options: RingOptions = RingOptions()) -> list[AfPacketRing]:
    """One ring per worker, in one fanout group (when more than one)."""
    bpf = compile_bpf(bpf_expression) if bpf_expression else None
    group = (os.getpid() & 0xFFFF) if workers > 1 else None
    rings: list[AfPacketRing] = []
    try:
        for _ in range(workers):
            rings.append(AfPacketRing(interface, fanout_group=group, promiscuous=promiscuous, bpf=bpf,
                                      options=options))
    except BaseException:
        for ring in rings:
            ring.close()
        raise
    return rings

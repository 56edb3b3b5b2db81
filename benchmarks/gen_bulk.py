"""A bulk-transfer capture: few long TCP flows of full-size segments (the hot-path case).

    python -m benchmarks.gen_bulk OUT.pcap [--size 120M] [--flows 64]

Each flow: handshake, then full-size (1448-byte) data segments from the inside client with an
ACK from the server every second segment, then FIN/FIN. Flows are interleaved round-robin.
Payload bytes are random (ciphertext-like). Used by bench_replay to measure decode + flow
lookup at the packet rate a span port carrying uploads sees.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys

from benchmarks.gen_capture import parse_size

_ETH = bytes.fromhex("020000000001" "020000000002" "0800")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_REC = struct.Struct("<IIII")


def _frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    ip = _IP.pack(0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    tcp = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    return _ETH + ip + tcp + payload


def write_bulk(path: str, *, target_bytes: int, flows: int = 64, seed: int = 1) -> int:
    rng = random.Random(seed)
    payload = rng.randbytes(1448)
    ts = 1_767_225_600 * 1_000_000
    packets = 0
    written = 24
    state = []
    for i in range(flows):
        client = bytes([10, 1, i // 256, i % 256])
        server = bytes([203, 0, 113, 1 + i % 200])
        state.append([client, server, 40000 + i, 443, 1000, 500000])
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))

        def put(frame: bytes) -> None:
            nonlocal ts, packets, written
            ts += 3
            out.write(_REC.pack(ts // 1_000_000, ts % 1_000_000, len(frame), len(frame)))
            out.write(frame)
            packets += 1
            written += 16 + len(frame)

        for c, s, cp, sp, cseq, sseq in state:
            put(_frame(c, s, cp, sp, cseq, 0, 0x02, b""))
            put(_frame(s, c, sp, cp, sseq, cseq + 1, 0x12, b""))
            put(_frame(c, s, cp, sp, cseq + 1, sseq + 1, 0x10, b""))
        for f in state:
            f[4] += 1
            f[5] += 1
        n = 0
        while written < target_bytes:
            f = state[n % flows]
            c, s, cp, sp = f[:4]
            put(_frame(c, s, cp, sp, f[4], f[5], 0x18, payload))
            f[4] += 1448
            if n // flows % 2:
                put(_frame(s, c, sp, cp, f[5], f[4], 0x10, b""))
            n += 1
        for c, s, cp, sp, cseq, sseq in state:
            put(_frame(c, s, cp, sp, cseq, sseq, 0x11, b""))
            put(_frame(s, c, sp, cp, sseq, cseq + 1, 0x11, b""))
    return packets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--size", type=parse_size, default=parse_size("120M"))
    parser.add_argument("--flows", type=int, default=64)
    args = parser.parse_args()
    packets = write_bulk(args.out, target_bytes=args.size, flows=args.flows)
    print(f"{args.out}: {packets} packets", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

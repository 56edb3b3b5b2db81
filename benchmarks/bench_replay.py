"""Replay throughput, stage by stage, on one capture (one core).

    python -m benchmarks.bench_replay CAPTURE [--repeat N]

Stages measured on the same file in one run, each a full pass:
  reference     a minimal careful loop (mmap + struct + dict of 5-tuples): the yardstick
  read          capture reader only (mmap + record headers)
  decode        read + decode to Packet
  flows         read + decode + flow-table lookup/update (no reassembly), through agent.fastpath
  pipeline      the full `egresswatch replay` pipeline, EVE to /dev/null
Prints Mbit/s (of captured bytes) and packets/s per stage; the best of N repeats.
Generate a capture with `python -m benchmarks.gen_capture /tmp/bench.pcap --size 300M`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable

from agent.capture.pcapfile import CaptureFile
from agent.config import Config
from agent.decode import Decoder
from agent.defrag import Defragmenter
from agent.exporters.eve import EveWriter
from agent.fastpath import run_frames
from agent.flows import FlowLimits, FlowTable

from agent.stats import Stats


def stage_read(path: str) -> tuple[int, int]:
    packets = nbytes = 0
    with CaptureFile(path) as capture:
        for _ts, _lt, data in capture.frames():
            packets += 1
            nbytes += len(data)
    return packets, nbytes


def stage_decode(path: str) -> tuple[int, int]:
    anomalies: Counter[str] = Counter()
    decode = Decoder(anomalies, Defragmenter(anomalies)).decode
    packets = nbytes = 0
    with CaptureFile(path) as capture:
        for ts, lt, data in capture.frames():
            packets += 1
            nbytes += len(data)
            decode(ts, lt, data)
    return packets, nbytes


def stage_flows(path: str) -> tuple[int, int]:
    """decode + flow lookup, through the same fast path `egresswatch replay` uses."""
    anomalies: Counter[str] = Counter()
    decode = Decoder(anomalies, Defragmenter(anomalies)).decode
    table = FlowTable(FlowLimits(), anomalies, None)
    lookup = table.packet

    def slow(ts: int, lt: int, data: memoryview) -> None:
        pkt = decode(ts, lt, data)
        if pkt is not None:
            lookup(pkt)
            if table.ended:
                table.expired()

    with CaptureFile(path) as capture:
        packets, nbytes = run_frames(capture.frames(), table, slow)
    for _ in table.drain():
        pass
    return packets, nbytes


def stage_reference(path: str) -> tuple[int, int]:
    """The yardstick: a minimal careful loop (mmap, struct, dict of 5-tuples, counters) that
    knows only classic pcap, untagged Ethernet/IPv4/TCP/UDP and nothing of anomalies, limits,
    timeouts or reassembly. What the issue calls "a careful pure-Python loop"."""
    import mmap
    import struct

    rec = struct.Struct("<IIII").unpack_from
    ports = struct.Struct("!HH").unpack_from
    table: dict[bytes, list[int]] = {}
    packets = nbytes = 0
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        end = len(mm)
        off = 24
        while off + 16 <= end:
            _sec, _usec, incl, _orig = rec(mm, off)
            start = off + 16
            off = start + incl
            packets += 1
            nbytes += incl
            if mm[start + 12] == 8 and mm[start + 13] == 0 and mm[start + 23] in (6, 17):
                ihl = (mm[start + 14] & 15) * 4
                sport, dport = ports(mm, start + 14 + ihl)
                key = mm[start + 26:start + 34] + bytes((mm[start + 23],)) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
                counters = table.get(key)
                if counters is None:
                    table[key] = [1, incl]
                else:
                    counters[0] += 1
                    counters[1] += incl
    return packets, nbytes


def stage_pipeline(path: str) -> tuple[int, int]:
    from agent.pipeline import Pipeline

    stats = Stats()
    writer = EveWriter(os.devnull)
    pipeline = Pipeline(Config(), [writer], stats)
    pipeline.replay([CaptureFile(path)])
    writer.close()
    return stats.packets, stats.bytes


STAGES: dict[str, Callable[[str], tuple[int, int]]] = {
    "reference": stage_reference, "read": stage_read, "decode": stage_decode, "flows": stage_flows,
    "pipeline": stage_pipeline,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--stages", default=",".join(STAGES))
    args = parser.parse_args()
    size = os.path.getsize(args.capture)
    print(f"# {args.capture}: {size / 1e6:.1f} MB; Python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; best of {args.repeat}")
    names = args.stages.split(",")
    best = {name: float("inf") for name in names}
    counts: dict[str, tuple[int, int]] = {}
    # Repeats are interleaved across stages so that a noisy neighbour hurts all stages alike.
    for _ in range(args.repeat):
        for name in names:
            started = time.perf_counter()
            counts[name] = STAGES[name](args.capture)
            best[name] = min(best[name], time.perf_counter() - started)
    print(f"{'stage':<10} {'Mbit/s':>9} {'packets/s':>11} {'seconds':>8} {'vs reference':>13}")
    reference = counts["reference"][0] / best["reference"] if "reference" in counts else None
    for name in names:
        packets, nbytes = counts[name]
        rate = packets / best[name]
        ratio = f"{rate / reference:12.2f}x" if reference else f"{'':>13}"
        print(f"{name:<10} {nbytes * 8 / 1e6 / best[name]:9.0f} {rate:11,.0f} {best[name]:8.2f} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

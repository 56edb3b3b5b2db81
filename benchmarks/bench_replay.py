"""Replay throughput, stage by stage, on one capture (one core).

    python -m benchmarks.bench_replay CAPTURE [--repeat N]

Stages measured on the same file in one run, each a full pass:
  reference     a minimal careful loop (mmap + struct + dict of 5-tuples): the yardstick
  read          capture reader only (mmap + record headers)
  decode        read + decode to Packet
  flows         read + decode + flow-table lookup/update (no reassembly), through agent.fastpath
  pipeline      the full `egresswatch replay --eve FILE` pipeline (EVE to a temporary file)
  hyperscan-limit
                Hyperscan alone: one block-mode scan of every TCP/UDP payload of the capture,
                concatenated into one buffer beforehand (not timed), with exactly the expressions
                and flags the pipeline's engine compiles (`classifiers.engine.expressions`). The
                issue 5 yardstick: pipeline Mbit/s over this stage's, both of captured bytes.
  hyperscan-limit-v0
                the same with the rule patterns as they were when issue 5 was filed (every one
                with SOM_LEFTMOST): a fixed yardstick, since cheaper patterns raise the limit too.
Prints Mbit/s (of captured bytes) and packets/s per stage; the best of N repeats, repeats
interleaved across stages. `--clock cpu` times with process CPU time (time.process_time), which
leaves out the time a busy machine keeps this process waiting for a core. The last column is
relative to `--ratio-to` (default: reference, else hyperscan-limit when measured).
Generate a capture with `python -m benchmarks.gen_capture /tmp/bench.pcap --size 300M`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable

from agent.capture.pcapfile import CaptureFile
from agent.config import Config
from agent.decode import Decoder
from agent.defrag import Defragmenter
from agent.errors import UsageError
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


# The built-in rule patterns as they were when issue 5 was filed (all compiled with SOM_LEFTMOST):
# a fixed yardstick, since making the patterns cheaper raises the limit measured with today's.
ISSUE5_PATTERNS = (
    rb"[1-8]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]",
    rb"[1-8]\d{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}",
    rb"(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}",
    rb"[2-6]\d{3}(?:[ -]?\d{4}){2}[ -]?\d{1,7}",
    rb"(?:62|81)\d{2}(?:[ -]?\d{4}){2}[ -]?\d{4,7}",
    rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}",
    rb"[1-9ANY][0-9A-HJ-NP-RTUW-Y]\d{6}[0-9A-HJ-NP-RTUW-Y]{10}",
    rb"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?",
    rb"(?:E[A-HJ-NP-Z0-9]|[GKH]\d|1[45]|[PSD]E|MA)\d{7}",
    rb"[A-Z0-9<]{9}\dCHN\d{7}[MFX<]\d{7}[A-Z0-9<]{14}[\d<]\d",
)


def _engine_expressions() -> tuple[list[bytes], list[int]]:
    from classifiers.classes import RULES
    from classifiers.engine import expressions

    return expressions(RULES)


def _issue5_expressions() -> tuple[list[bytes], list[int]]:
    import hyperscan

    return list(ISSUE5_PATTERNS), [hyperscan.HS_FLAG_SOM_LEFTMOST] * len(ISSUE5_PATTERNS)


_payloads: dict[str, tuple[bytes, int, int]] = {}


def payload_buffer(path: str) -> tuple[bytes, int, int]:
    """Every TCP/UDP payload of the capture (our decoder) in one buffer; also packets and bytes."""
    if path not in _payloads:
        anomalies: Counter[str] = Counter()
        decode = Decoder(anomalies, Defragmenter(anomalies)).decode
        parts = []
        packets = nbytes = 0
        with CaptureFile(path) as capture:
            for ts, lt, data in capture.frames():
                packets += 1
                nbytes += len(data)
                pkt = decode(ts, lt, data)
                if pkt is not None and len(pkt.payload):
                    parts.append(bytes(pkt.payload))
        _payloads.clear()
        _payloads[path] = (b"".join(parts), packets, nbytes)
    return _payloads[path]


class HyperscanLimit:
    """The issue 5 limit: Hyperscan block mode over all payloads in one buffer.

    Preparation (decoding every frame, concatenating payloads, compiling) is done once in
    `prepare` and not timed; the stage itself is the one `scan` call, whose handler only
    counts matches (the least any caller of Hyperscan does)."""

    def __init__(self, expressions: Callable[[], tuple[list[bytes], list[int]]]) -> None:
        self.expressions = expressions
        self.path = ""
        self.database: object = None
        self.matches = 0

    def prepare(self, path: str) -> None:
        import hyperscan

        payload_buffer(path)
        patterns, flags = self.expressions()
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        database.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns), flags=flags)
        self.database = database
        self.path = path

    def _on_match(self, rule: int, start: int, end: int, flags: int, context: object) -> None:
        self.matches += 1

    def __call__(self, path: str) -> tuple[int, int]:
        if path != self.path:
            self.prepare(path)
        payloads, packets, nbytes = payload_buffer(path)
        self.matches = 0
        self.database.scan(payloads, match_event_handler=self._on_match)  # type: ignore[attr-defined]
        return packets, nbytes


hyperscan_limit = HyperscanLimit(_engine_expressions)
hyperscan_limit_v0 = HyperscanLimit(_issue5_expressions)


def stage_pipeline(path: str) -> tuple[int, int]:
    """`egresswatch replay CAPTURE --eve FILE`: EVE to a temporary file, removed afterwards."""
    from agent.pipeline import Pipeline

    fd, eve = tempfile.mkstemp(prefix="bench-replay-", suffix=".json")
    os.close(fd)
    try:
        stats = Stats()
        writer = EveWriter(eve)
        pipeline = Pipeline(Config(), [writer], stats)
        pipeline.replay([CaptureFile(path)])
        writer.close()
    finally:
        os.unlink(eve)
    return stats.packets, stats.bytes


STAGES: dict[str, Callable[[str], tuple[int, int]]] = {
    "reference": stage_reference, "read": stage_read, "decode": stage_decode, "flows": stage_flows,
    "pipeline": stage_pipeline, "hyperscan-limit": hyperscan_limit, "hyperscan-limit-v0": hyperscan_limit_v0,
}
PREPARE: dict[str, Callable[[str], None]] = {"hyperscan-limit": hyperscan_limit.prepare,
                                             "hyperscan-limit-v0": hyperscan_limit_v0.prepare}
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


_YARDSTICKS = ("reference", "hyperscan-limit", "hyperscan-limit-v0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--ratio-to", default="",
                        help="comma-separated stages to give ratios to (default: the yardsticks measured)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    names = args.stages.split(",")
    bases = args.ratio_to.split(",") if args.ratio_to else [n for n in _YARDSTICKS if n in names]
    unknown = [n for n in names + bases if n not in STAGES]
    if unknown or args.repeat < 1:
        print(f"bench_replay: unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})" if unknown
              else "bench_replay: --repeat must be at least 1", file=sys.stderr)
        return 2
    missing = [n for n in bases if n not in names]
    if missing:
        print(f"bench_replay: --ratio-to {missing[0]} is not among the measured --stages", file=sys.stderr)
        return 2
    try:
        size = CaptureFile(args.capture).size
    except UsageError as exc:
        print(f"bench_replay: {exc}", file=sys.stderr)
        return 2
    print(f"# {args.capture}: {size / 1e6:.1f} MB; Python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; best of {args.repeat}, {args.clock} clock")
    best = {name: float("inf") for name in names}
    counts: dict[str, tuple[int, int]] = {}
    for name in names:
        if name in PREPARE:
            PREPARE[name](args.capture)
    # Repeats are interleaved across stages so that a noisy neighbour hurts all stages alike.
    clock = CLOCKS[args.clock]
    for _ in range(args.repeat):
        for name in names:
            started = clock()
            counts[name] = STAGES[name](args.capture)
            best[name] = min(best[name], clock() - started)
    rates = {name: counts[name][0] / best[name] for name in names}
    print(f"{'stage':<19} {'Mbit/s':>9} {'packets/s':>11} {'seconds':>8}"
          + "".join(f" {'vs ' + b:>22}" for b in bases))
    for name in names:
        packets, nbytes = counts[name]
        print(f"{name:<19} {nbytes * 8 / 1e6 / best[name]:9.0f} {rates[name]:11,.0f} {best[name]:8.2f}"
              + "".join(f" {rates[name] / rates[b]:21.3f}x" for b in bases))
    return 0


if __name__ == "__main__":
    sys.exit(main())

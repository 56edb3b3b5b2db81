"""Detection precision and recall per class against the generator's ground truth.

    python -m benchmarks.bench_detection [--size 20M] [--seed 11] [--capture FILE --truth FILE.json]

The capture is replayed with the rule packs the truth names (the generator plants the classes
of deploy/rules/example-important-data.yaml too), so important-data classes are measured like
the built-in ones. Events never carry raw values (only masked samples), so the comparison is by
distinct counts per (flow, class): for each egress flow in the truth, found = the event's
count, expected = the number of distinct planted values; true positives = min(found, expected),
false positives = the excess, false negatives = the shortfall. Values reported for flows the truth says carry
none (domestic flows, inbound flows, TLS, decoys) are all false positives.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.pipeline import Pipeline, open_captures
from agent.stats import Stats

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class _Collect:
    def __init__(self) -> None:
        self.flows: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        if event["event_type"] == "flow":
            self.flows.append(event)

    def close(self) -> None:
        pass


def _key(src: str, sport: int, dst: str, dport: int) -> tuple[str, int, str, int]:
    return src, sport, dst, dport


def evaluate(capture: str, truth: dict[str, Any]) -> tuple[dict[str, dict[str, float]], float]:
    sink = _Collect()
    # The rule packs whose classes the generator planted (paths relative to the project root).
    packs = tuple(str(PROJECT_ROOT / pack) for pack in truth.get("rule_packs", []))
    started = time.perf_counter()
    Pipeline(Config(rule_packs=packs), [sink], Stats()).replay(open_captures([capture]))
    seconds = time.perf_counter() - started
    expected: dict[tuple[str, int, str, int], Counter[str]] = {}
    for entry in truth["planted"]:
        f = entry["flow"]
        expected[_key(f["src"], f["sport"], f["dst"], f["dport"])] = Counter(
            {cls: len(set(values)) for cls, values in entry["values"].items()})
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    seen = set()
    for event in sink.flows:
        key = _key(event["src_ip"], event["src_port"], event["dest_ip"], event["dest_port"])
        want = expected.get(key, Counter())
        got = Counter({m["class"]: m["count"] for m in event.get("classification", {}).get("matches", [])})
        seen.add(key)
        for cls in set(want) | set(got):
            tp[cls] += min(want[cls], got[cls])
            fp[cls] += max(0, got[cls] - want[cls])
            fn[cls] += max(0, want[cls] - got[cls])
    for key, want in expected.items():
        if key not in seen:                      # a planted flow we never reported at all
            for cls, n in want.items():
                fn[cls] += n
    table = {}
    for cls in sorted(set(tp) | set(fp) | set(fn)):
        precision = tp[cls] / (tp[cls] + fp[cls]) if tp[cls] + fp[cls] else 1.0
        recall = tp[cls] / (tp[cls] + fn[cls]) if tp[cls] + fn[cls] else 1.0
        table[cls] = {"tp": tp[cls], "fp": fp[cls], "fn": fn[cls], "precision": precision, "recall": recall}
    return table, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="20M", help="generated capture size (default 20M)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--capture", help="use this capture instead of generating one")
    parser.add_argument("--truth", help="its ground-truth JSON (with --capture)")
    args = parser.parse_args()
    if args.capture:
        capture, truth = args.capture, json.loads(Path(args.truth).read_text())
    else:
        from benchmarks.gen_capture import parse_size, write_capture
        tmp = tempfile.mkdtemp(prefix="egresswatch-detect-")
        capture = str(Path(tmp) / "detect.pcap")
        truth = write_capture(capture, target_bytes=parse_size(args.size), seed=args.seed)
    table, seconds = evaluate(capture, truth)
    print(f"# {capture}: detection against ground truth ({seconds:.1f} s replay)")
    print(f"{'class':<22} {'tp':>7} {'fp':>5} {'fn':>5} {'precision':>10} {'recall':>8}")
    for cls, row in table.items():
        print(f"{cls:<22} {row['tp']:>7} {row['fp']:>5} {row['fn']:>5} {row['precision']:>10.4f} {row['recall']:>8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

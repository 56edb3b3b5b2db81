"""Regenerate the bundled sample capture and its ground truth (seed 7, about 200 kB).

    python samples/make_sample.py

Writes samples/sample-egress.pcap (what `scripts/demo.sh` replays) and
samples/sample-egress.truth.json (what is in it: flows by kind, SNIs, and per egress flow the
planted synthetic identifiers and decoys). Both are committed; tests/test_gen_capture.py fails
when they no longer match what benchmarks/gen_capture.py writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gen_capture import write_capture  # noqa: E402

SEED = 7
TARGET_BYTES = 200_000
PCAP = ROOT / "samples" / "sample-egress.pcap"
TRUTH = ROOT / "samples" / "sample-egress.truth.json"


def main() -> int:
    truth = write_capture(str(PCAP), target_bytes=TARGET_BYTES, seed=SEED)
    TRUTH.write_text(json.dumps(truth, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    kinds = ", ".join(f"{kind} {n}" for kind, n in truth["flows"]["by_kind"].items())
    print(f"{PCAP.relative_to(ROOT)}: {truth['file_bytes']} bytes, {truth['packets']} packets, "
          f"{truth['flows']['total']} flows ({kinds}); {sum(truth['planted_counts'].values())} planted values "
          f"in {len(truth['planted'])} egress flows; {TRUTH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

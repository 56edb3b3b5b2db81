"""Shares of a py-spy profile by pipeline stage (benchmarks/RESULTS.md, "Where the time goes now").

    py-spy record -r 250 -f raw -o prof.txt -- python -c "...replay..."
    python -m benchmarks.profile_shares prof.txt

Each sample is given to the innermost frame that belongs to a stage, so a stage's share is the
time spent in it and in what it calls that belongs to no other stage.
"""

from __future__ import annotations

import collections
import re
import sys

# (stage, pattern of the frames that belong to it); the first stage that matches a frame wins.
STAGES = [
    ("scanner (ScanStream incl. Hyperscan, confirm, findings)", r"ScanStream\.|_TimedScan\.|Findings\.add|check_|_check_for"),
    ("app parsers (HTTP/SMTP/detect/charsets)", r"HttpParser|_Multipart|_Inflate|_Sniff|_Sink|detect_|_dns_|utf16|Utf16|ascii_digits|client_hello|_feed_hello"),
    ("app session glue", r"AppSession\.|_contained"),
    ("flow end: events, geo, register, stats", r"_finish_flow|flow_event|_header|community_id|format_ts|dumps|EveWriter|_emit|_geo_fields|_transfer|_finish_ended|finish \(pipeline"),
    ("alerts", r"_maybe_alert"),
    ("flow creation + session setup", r"_session_for|FlowTable\._create|Engine\.stream"),
    ("reassembly", r"TcpStream\."),
    ("flow table lookup/update", r"FlowTable\.|flow_key|_set_state|_enqueue"),
    ("decode", r"Decoder\.|Defragmenter"),
    ("passive DNS", r"PassiveDns|_answers|_name \(passive"),
    ("reader + fast-path loop", r"run_frames \(fastpath|_pcap_frames|CaptureFile|^run_frames"),
    ("slow-path dispatch", r"run_frames\.<locals>\.slow"),
    ("start-up (imports, rules, GeoIP)", r"importlib|_load_or_compile|<module>|Pipeline\.__init__|compile_rules"),
]


def shares(path: str) -> tuple[collections.Counter[str], int]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, samples = line.rstrip().rpartition(" ")
            if not samples.isdigit():
                continue
            n = int(samples)
            total += n
            if not stack.strip():
                counts["no Python frame (interpreter start-up, exit)"] += n
                continue
            # The outermost frame is the profiled script itself: it belongs to no stage.
            for frame in reversed(stack.split(";")[1:]):
                stage = next((name for name, pattern in STAGES if re.search(pattern, frame)), None)
                if stage is not None:
                    counts[stage] += n
                    break
            else:
                counts["other"] += n
    return counts, total


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m benchmarks.profile_shares PY-SPY-RAW-OUTPUT", file=sys.stderr)
        return 2
    try:
        counts, total = shares(sys.argv[1])
    except OSError as exc:
        print(f"profile_shares: cannot read {sys.argv[1]}: {exc.strerror}", file=sys.stderr)
        return 2
    if not total:
        print(f"profile_shares: no samples in {sys.argv[1]}", file=sys.stderr)
        return 2
    for stage, n in counts.most_common():
        print(f"{100 * n / total:5.1f}%  {stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

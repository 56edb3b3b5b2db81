"""Progress bar and summary line on stderr."""

from __future__ import annotations

import io
from collections import Counter

from agent.pipeline import ReplayResult
from agent.report import Progress, summary_line
from agent.stats import Stats


def test_progress_bar_draws_fraction_rate_and_name_then_clears():
    out = io.StringIO()
    bar = Progress(out, width=10)
    bar._last_draw = -1.0
    bar.update(50, 100, "captures/big.pcap")
    text = out.getvalue()
    assert text.startswith("\r[#####.....]") and "50.0%" in text and "Mbit/s" in text and "big.pcap" in text
    bar.clear()
    assert out.getvalue().endswith("\r\033[K")


def test_summary_line_names_the_most_frequent_anomalies():
    stats = Stats(packets=1000, bytes=1_000_000, flows=10, flow_events=4,
                  anomalies=Counter({"tcp.gap": 5, "tcp.gap_bytes": 9000, "decode.arp": 2}))
    line = summary_line(ReplayResult(stats, seconds=2.0))
    assert "1,000 packets" in line and "4.0 Mbit/s" in line and "10 flows, 4 flow events" in line
    assert "7 anomalies (tcp.gap 5, decode.arp 2)" in line

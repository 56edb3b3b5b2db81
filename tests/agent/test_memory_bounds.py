"""Memory does not grow with capture size for a fixed set of flows (issue 5).

The same flows carry 4x the bytes in the second capture; the peak of Python heap memory
(tracemalloc: allocations of the pipeline, not the mapped capture file) during the replay
must stay where it was. Values repeat (a fixed set of distinct values per flow), since
distinct values are remembered per flow up to `[findings]` limits by design.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from agent.config import Config
from agent.pipeline import Pipeline, open_captures
from agent.stats import Stats
from benchmarks.gen_bulk import write_bulk


def _peak_heap(path: Path) -> tuple[int, Stats]:
    stats = Stats()
    pipeline = Pipeline(Config(rule_cache="off"), [], stats)
    gc.collect()
    tracemalloc.start()
    try:
        pipeline.replay(open_captures([str(path)]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, stats


def _mobile(n: int) -> str:
    # CN mobile numbers of the 139 segment: any 8 digits after it are valid.
    return f"139{n:08d}"


def _http_uploads(path: Path, lines: int) -> None:
    from scapy.utils import wrpcap

    from tests.test_classification_e2e import INSIDE, tcp_conversation

    packets = []
    for flow in range(8):
        body = "".join(f"user{i},{_mobile(i % 300)}\n" for i in range(lines)).encode()
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4000]), body[i:i + 4000])
                           for i in range(0, len(body), 4000)) + b"0\r\n\r\n"
        head = (b"POST /upload HTTP/1.1\r\nHost: files.example\r\nContent-Type: text/csv\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        request = head + chunked
        segments = [request[i:i + 1400] for i in range(0, len(request), 1400)]
        packets += tcp_conversation(INSIDE, "5.9.20.%d" % (flow + 1), 42000 + flow, segments,
                                    [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], t0=1_767_225_600.0 + flow)
    wrpcap(str(path), packets)


def test_raw_stream_flows_heap_is_flat_in_capture_size(tmp_path: Path):
    small, large = tmp_path / "small.pcap", tmp_path / "large.pcap"
    write_bulk(str(small), target_bytes=3_000_000, flows=16)
    write_bulk(str(large), target_bytes=12_000_000, flows=16)
    small_peak, small_stats = _peak_heap(small)
    large_peak, large_stats = _peak_heap(large)
    assert large_stats.bytes > 3.9 * small_stats.bytes and large_stats.flows == small_stats.flows == 16
    assert large_peak <= small_peak * 1.1 + 512 * 1024, (small_peak, large_peak)


def test_http_upload_flows_heap_is_flat_in_capture_size(tmp_path: Path):
    small, large = tmp_path / "small.pcap", tmp_path / "large.pcap"
    _http_uploads(small, 1_000)
    _http_uploads(large, 4_000)
    small_peak, small_stats = _peak_heap(small)
    large_peak, large_stats = _peak_heap(large)
    assert large_stats.bytes > 3.5 * small_stats.bytes and large_stats.flows == small_stats.flows == 8
    # Every flow found its 300 distinct numbers in both captures.
    assert small_stats.classified == large_stats.classified and sum(small_stats.classified.values()) == 8 * 300
    assert large_peak <= small_peak * 1.1 + 512 * 1024, (small_peak, large_peak)

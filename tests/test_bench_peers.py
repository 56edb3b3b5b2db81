"""The peers benchmark harness (benchmarks/bench_peers.py) on a tiny generated capture.

Every approach runs once on the same file; a peer whose package or tool is missing is skipped
with the reason the harness gives. Detection scoring is checked against hand-built cases and,
for egresswatch, against benchmarks.bench_detection's own comparison on the same capture.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.bench_peers import PEER_BY_NAME, main, run_peers, run_process, score, table
from benchmarks.gen_capture import write_capture

SIZE = 400_000
SEED = 4
SLICE = 200
HIT_COUNTERS = ("hyperscan-limit", "re", "scapy-re", "pyshark-re", "tshark", "ngrep-1", "ngrep-2")


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("peers") / "tiny.pcap"
    truth = write_capture(str(path), target_bytes=SIZE, seed=SEED)
    path.with_suffix(".truth.json").write_text(json.dumps(truth))
    return path, truth


@pytest.fixture(scope="module")
def record(capture) -> dict:
    path, truth = capture
    # A small keyword pack (50 terms) keeps the rule compile short; every approach once.
    return run_peers(str(path), truth, list(PEER_BY_NAME), slice_packets=SLICE, repeat=1, timeout=600, terms=50)


def _row(record: dict, name: str) -> dict:
    row = next(r for r in record["rows"] if r["approach"] == name)
    if row["status"] in ("skipped", "pending"):
        pytest.skip(f"{name}: {row['reason']}")
    assert row["status"] == "ok", f"{name}: {row['status']}: {row.get('reason')}"
    return row


@pytest.mark.parametrize("name", list(PEER_BY_NAME))
def test_each_peer_runs_and_its_row_has_the_fields(record, capture, name):
    _path, truth = capture
    row = _row(record, name)
    assert row["seconds"] > 0 and row["runs"] == [row["seconds"]]
    assert row["mbit_s"] == pytest.approx(row["bytes"] * 8 / 1e6 / row["seconds"])
    assert row["packets_s"] == pytest.approx(row["packets"] / row["seconds"])
    assert row["x_limit"] > 0 and row["timed"]
    # None only when the process ended before the first /proc sample (a fast tool on a tiny capture).
    assert row["peak_rss_mb"] is None or row["peak_rss_mb"] > 0
    if PEER_BY_NAME[name].sliced:
        assert row["packets"] == SLICE and row["note"].startswith(f"extrapolated from {SLICE} packets")
    else:
        assert row["packets"] == truth["packets"] == record["capture_packets"]
        assert row["bytes"] == record["capture_bytes"]
    if name in HIT_COUNTERS:
        assert isinstance(row["hits"], int) and row["hits"] > 0       # the capture carries resident ids
    detection = row.get("detection")
    if name == "dpkt-hyperscan" or name.startswith("egresswatch"):
        assert detection is not None and detection["tp"] > 0
        assert 0 < detection["recall"] <= 1 and 0 < detection["precision"] <= 1
    else:
        assert detection is None


def test_hyperscan_limit_is_the_reference_of_the_ratios(record):
    limit = _row(record, "hyperscan-limit")
    assert limit["x_limit"] == 1.0 and record["limit_mbit_s"] == limit["mbit_s"]


def test_egresswatch_scores_as_bench_detection_does(record, capture):
    """The harness scores the EVE file of `egresswatch replay`; bench_detection replays in
    process. Same capture, same classes: same true/false positives and negatives."""
    from benchmarks.bench_detection import evaluate

    path, truth = capture
    expected, _seconds = evaluate(str(path), truth)
    for name in ("egresswatch-1w", "egresswatch-2w"):
        if next(r for r in record["rows"] if r["approach"] == name)["status"] != "ok":
            continue
        by_class = _row(record, name)["detection"]["by_class"]
        assert {cls: (r["tp"], r["fp"], r["fn"]) for cls, r in by_class.items()} == \
            {cls: (r["tp"], r["fp"], r["fn"]) for cls, r in expected.items() if cls in truth["value_classes"]}


def test_per_packet_matching_finds_less_than_reassembly(record):
    per_packet = _row(record, "dpkt-hyperscan")["detection"]
    full = _row(record, "egresswatch-1w")["detection"]
    assert per_packet["tp"] < full["tp"]             # split, chunked, gzip and GBK values are missed


def test_table_has_a_line_per_approach(record):
    lines = table(record).splitlines()
    assert len(lines) == 2 + len(PEER_BY_NAME)
    assert [line.split("|")[1].strip() for line in lines[2:]] == list(PEER_BY_NAME)


def test_score_counts_distinct_values_per_flow_and_class():
    truth = {"value_classes": ["email", "cn_mobile"],
             "planted": [{"flow": {"src": "10.0.0.1", "sport": 1000, "dst": "1.1.1.1", "dport": 80},
                          "values": {"email": ["a@example.com", "b@example.com", "a@example.com"],
                                     "cn_mobile": ["13800000000"]}}]}
    found = {("10.0.0.1", 1000, "1.1.1.1", 80): Counter({"email": 3, "bench_terms": 4}),
             ("10.0.0.2", 1001, "10.0.0.3", 80): Counter({"cn_mobile": 2})}
    result = score(found, truth)
    assert result["by_class"]["email"] == {"tp": 2, "fp": 1, "fn": 0, "precision": 2 / 3, "recall": 1.0}
    assert result["by_class"]["cn_mobile"] == {"tp": 0, "fp": 2, "fn": 1, "precision": 0.0, "recall": 0.0}
    assert "bench_terms" not in result["by_class"]          # only the truth's classes are scored
    assert (result["tp"], result["fp"], result["fn"], result["fp_in_unplanted_flows"]) == (2, 3, 1, 2)


def test_a_run_over_its_timeout_is_killed_and_reported():
    measured = run_process([sys.executable, "-c", "import time; time.sleep(120)"], "0", 0, keep_stdout=True)
    assert measured.returncode is None


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, capture):
    path, _truth = capture
    not_a_capture = tmp_path / "notes.txt"
    not_a_capture.write_text("hello\n")
    bad_truth = tmp_path / "truth.json"
    bad_truth.write_text("{}")
    for argv in ([str(tmp_path / "missing.pcap")], [str(not_a_capture)],
                 [str(path), "--peers", "wireshark-ai"], [str(path), "--truth", str(bad_truth)],
                 [str(path), "--repeat", "many"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("bench_peers: error: ") and err.count("\n") == 1, err


def test_plot_from_the_record(record, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install -r benchmarks/requirements.txt)")
    from benchmarks.plot_results import main as plot_main

    source = tmp_path / "run.json"
    source.write_text(json.dumps(record))
    out = tmp_path / "run.png"
    assert plot_main([str(source), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

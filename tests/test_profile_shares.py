"""benchmarks.profile_shares: py-spy raw samples given to the innermost frame of a stage."""

from __future__ import annotations

from pathlib import Path

from benchmarks.profile_shares import shares


def test_samples_go_to_the_innermost_stage(tmp_path: Path):
    raw = tmp_path / "prof.txt"
    raw.write_text(
        "<module> (run.py:1);run_frames (agent/fastpath.py:30) 10\n"
        "<module> (run.py:1);run_frames (agent/fastpath.py:30);slow (agent/pipeline.py:250);"
        "Decoder.decode (agent/decode.py:126) 5\n"
        "<module> (run.py:1);run_frames (agent/fastpath.py:30);FlowTable.packet (agent/flows.py:145);"
        "TcpStream.segment (agent/reassembly.py:85);AppSession.data (agent/apps/session.py:116);"
        "ScanStream.write (classifiers/engine.py:262) 20\n"
        "<module> (run.py:1);print (builtins) 1\n"
        " 4\n")
    counts, total = shares(str(raw))
    assert total == 40
    assert counts == {"reader + fast-path loop": 10, "decode": 5,
                      "scanner (ScanStream incl. Hyperscan, confirm, findings)": 20, "other": 1,
                      "no Python frame (interpreter start-up, exit)": 4}

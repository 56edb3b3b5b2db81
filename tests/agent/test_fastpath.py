"""The fast path changes speed, never results: replays with and without it are identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import Config
from agent.pipeline import Pipeline, open_captures
from agent.stats import Stats
from tests.streams import CORPUS, PROJECT_ROOT, corpus_captures

SAMPLE = PROJECT_ROOT / "samples" / "sample-egress.pcap"


class Collect:
    def __init__(self) -> None:
        self.events: list[str] = []

    def emit(self, event: dict) -> None:
        self.events.append(json.dumps(event, sort_keys=True))

    def close(self) -> None:
        pass


def _replay(paths: list[str], fast_path: bool) -> tuple[list[str], Stats]:
    sink, stats = Collect(), Stats()
    # A fixed digest key: the year's ledger (sketches of value digests) compares equal across runs.
    Pipeline(Config(), [sink], stats, fast_path=fast_path, digest_key=b"k" * 16).replay(open_captures(paths))
    return sink.events, stats


def _same(paths: list[str]) -> None:
    fast_events, fast_stats = _replay(paths, True)
    slow_events, slow_stats = _replay(paths, False)
    assert fast_events == slow_events
    assert fast_stats == slow_stats


def test_sample_capture_same_with_and_without_fast_path():
    _same([str(SAMPLE)])


def test_generated_capture_same_with_and_without_fast_path(tmp_path: Path):
    from benchmarks.gen_capture import write_capture
    path = tmp_path / "mix.pcap"
    write_capture(str(path), target_bytes=3_000_000, seed=3)
    _same([str(path)])


def test_corpus_same_with_and_without_fast_path():
    rows = corpus_captures()
    _same([str(CORPUS / row["path_in_corpus"]) for row in rows
           if row["path_in_corpus"].startswith(("mixed/", "vlan/", "tcp-evasion/", "http/"))])


def test_internal_error_is_contained_counted_and_logged_once(monkeypatch, caplog):
    import agent.apps.session

    def broken(toserver, toclient):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(agent.apps.session, "detect_tcp", broken)
    sink, stats = Collect(), Stats()
    Pipeline(Config(), [sink], stats).replay(open_captures([str(SAMPLE)]))
    assert stats.anomalies["internal.app.RuntimeError"] > 1
    assert sum("internal error" in r.message for r in caplog.records) == 1
    assert sink.events                                  # the run went on and exported flows
    with pytest.raises(RuntimeError):
        Pipeline(Config(), [Collect()], Stats(), strict=True).replay(open_captures([str(SAMPLE)]))

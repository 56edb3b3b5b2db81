"""`replay --workers N` gives exactly the output of one worker: same events, same order, same counters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import Config
from agent.errors import RunError
from agent.pipeline import Pipeline, Shard, open_captures, shard_of
from agent.stats import Stats
from agent.workers import replay_parallel
from tests.streams import CORPUS, PROJECT_ROOT, corpus_captures

SAMPLE = PROJECT_ROOT / "samples" / "sample-egress.pcap"


class Collect:
    def __init__(self) -> None:
        self.events: list[str] = []

    def emit(self, event: dict) -> None:
        self.events.append(json.dumps(event))

    def close(self) -> None:
        pass


KEY = b"k" * 16      # the same value digests in every run, so the year's ledgers compare equal


def _one(paths: list[str]) -> tuple[list[str], Stats]:
    sink, stats = Collect(), Stats()
    Pipeline(Config(), [sink], stats, strict=True, digest_key=KEY).replay(open_captures(paths))
    return sink.events, stats


def _many(paths: list[str], workers: int) -> tuple[list[str], Stats]:
    sink = Collect()
    result = replay_parallel(Config(), paths, workers, [sink], strict=True, digest_key=KEY)
    return sink.events, result.stats


def _same(paths: list[str], workers: tuple[int, ...] = (2, 3)) -> list[str]:
    events, stats = _one(paths)
    for count in workers:
        many_events, many_stats = _many(paths, count)
        assert many_events == events, f"{count} workers"
        assert many_stats == stats, f"{count} workers"
    return events


def test_sample_capture_identical_with_workers():
    events = _same([str(SAMPLE)])
    assert len(events) > 20


def test_generated_mix_identical_with_workers(tmp_path: Path):
    from benchmarks.gen_capture import write_capture
    path = tmp_path / "mix.pcap"
    write_capture(str(path), target_bytes=3_000_000, seed=5)
    events = _same([str(path)])
    assert sum('"event_type": "alert"' in e for e in events) > 0


def test_corpus_identical_with_workers():
    rows = corpus_captures()
    paths = [str(CORPUS / row["path_in_corpus"]) for row in rows]
    events = _same(paths, workers=(2,))
    assert events


def test_flow_hash_is_the_same_both_ways_and_spreads_flows():
    from agent.decode import Decoder
    from agent.defrag import Defragmenter
    from collections import Counter
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    decoder = Decoder(Counter(), Defragmenter(Counter()))
    owners = Counter()
    def owner(src: str, dst: str, sport: int, dport: int) -> int:
        frame = bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport))
        return shard_of(decoder.decode(0, 1, memoryview(frame)), 4)

    for host in range(400):
        inside = f"10.0.{host // 200}.{host % 200 + 1}"
        there = owner(inside, "5.9.0.1", 40000 + host, 443)
        assert there == owner("5.9.0.1", inside, 443, 40000 + host)
        # Every connection between two hosts (an FTP control and its data channel) shares a worker.
        assert there == owner(inside, "5.9.0.1", 50000 + host, 20)
        owners[there] += 1
    assert len(owners) == 4 and min(owners.values()) > 60       # 400 host pairs over 4 workers


def test_worker_failure_is_one_line_exit_1(monkeypatch, capsys):
    import agent.workers

    original = agent.workers.Pipeline

    class Exploding(original):   # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            if kwargs.get("shard") == Shard(1, 2):
                raise MemoryError("simulated")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(agent.workers, "Pipeline", Exploding)
    with pytest.raises(RunError, match="worker 1 failed: MemoryError"):
        replay_parallel(Config(), [str(SAMPLE)], 2, [Collect()])
    assert main(["replay", str(SAMPLE), "--workers", "2", "--eve", "/dev/null", "-q"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "egresswatch: error: replay worker 1 failed: MemoryError: simulated"


@pytest.mark.parametrize("value", ["0", "x", "1000"])
def test_bad_worker_count_is_a_usage_error(value, capsys):
    assert main(["replay", str(SAMPLE), "--workers", value]) == 2
    assert "workers" in capsys.readouterr().err

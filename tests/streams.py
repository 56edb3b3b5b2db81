"""Test helpers: run capture -> decode -> flows -> reassembly and collect each stream's bytes."""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.capture.pcapfile import CaptureFile
from agent.decode import Decoder
from agent.defrag import Defragmenter
from agent.events import ip_text
from agent.flows import Flow, FlowLimits, FlowTable

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate: Callable[[], object], seconds: float, interval: float = 0.2) -> object:
    """Poll until `predicate()` gives a true value and return it; AssertionError after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
CORPUS = PROJECT_ROOT.parent / "shared" / "corpus"
CORPUS_MISSING = "third-party pcap corpus not found at ../shared/corpus; see shared/corpus/README.md"
# tshark's follow,tcp,raw renders a hole as this text followed by a NUL byte.
TSHARK_GAP = b"[%d bytes missing in capture file]\x00"


@dataclass
class Collected:
    """What a StreamConsumer saw for one flow: bytes per direction with gap markers."""

    flow: Flow
    parts: list[list[bytes]] = field(default_factory=lambda: [[], []])
    gaps: list[list[int]] = field(default_factory=lambda: [[], []])
    ended: list[bool] = field(default_factory=lambda: [False, False])

    def data(self, direction: int, data: memoryview | bytes) -> None:
        self.parts[direction].append(bytes(data))

    def gap(self, direction: int, nbytes: int) -> None:
        self.gaps[direction].append(nbytes)
        self.parts[direction].append(TSHARK_GAP % nbytes)

    def end(self, direction: int) -> None:
        self.ended[direction] = True

    def stream(self, direction: int, *, gap_markers: bool = True) -> bytes:
        parts = self.parts[direction]
        if not gap_markers:
            return b"".join(p for p in parts if not (p.startswith(b"[") and p.endswith(b" missing in capture file]\x00")))
        return b"".join(parts)

    @property
    def endpoints(self) -> tuple[str, int, str, int]:
        f = self.flow
        return ip_text(f.client), f.cport, ip_text(f.server), f.sport


def reassemble(path: str | Path, limits: FlowLimits | None = None) -> tuple[list[Collected], Counter[str]]:
    """Every flow of the capture (TCP and UDP) with its reassembled bytes, in creation order."""
    anomalies: Counter[str] = Counter()
    decoder = Decoder(anomalies, Defragmenter(anomalies))
    collected: list[Collected] = []

    def factory(flow: Flow) -> Collected:
        c = Collected(flow)
        collected.append(c)
        return c

    table = FlowTable(limits or FlowLimits(), anomalies, factory)
    with CaptureFile(str(path)) as capture:
        for ts, linktype, data in capture.frames():
            pkt = decoder.decode(ts, linktype, data)
            if pkt is None:
                continue
            flow, direction = table.packet(pkt)
            if pkt.proto == 17:
                flow.consumer.data(direction, pkt.payload)  # type: ignore[union-attr]
        for _ in table.drain():
            pass
    return collected, anomalies


def corpus_rows() -> list[dict[str, str]]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.is_file():
        pytest.skip(CORPUS_MISSING)
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def corpus_captures() -> list[dict[str, str]]:
    return [row for row in corpus_rows() if row["packets"] != "-"]

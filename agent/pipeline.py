"""The replay loop: the one module that wires capture, decode, flows, apps and export together.

Data flows one way: frames -> packets -> (flow, direction) -> reassembled bytes -> app session
-> finished flows -> events -> exporters. Only flows that cross the inside/outside boundary
get an app session and reassembly; the others are counted and cost one dict lookup per packet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.apps.session import AppSession
from agent.capture.pcapfile import CaptureFile
from agent.config import Config
from agent.decode import PROTO_UDP, Decoder
from agent.defrag import Defragmenter
from agent.events import flow_event
from agent.flows import Flow, FlowTable
from agent.stats import Stats
from geo.networks import InternalNetworks

ProgressFn = Callable[[int, int, str], None]   # (bytes done, bytes total, current file)


class Exporter(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class ReplayResult:
    stats: Stats
    seconds: float = 0.0
    damaged: list[str] = field(default_factory=list)   # one line per capture that ended early


def open_captures(paths: Sequence[str]) -> list[CaptureFile]:
    """Open and validate every capture before processing any: a bad one is a usage error."""
    opened: list[CaptureFile] = []
    try:
        for path in paths:
            opened.append(CaptureFile(path))
    except BaseException:
        for capture in opened:
            capture.close()
        raise
    return opened


class Pipeline:
    """One single-threaded instance of every stage, fed frame by frame."""

    def __init__(self, config: Config, exporters: Sequence[Exporter], stats: Stats) -> None:
        self.config = config
        self.exporters = exporters
        self.stats = stats
        anomalies = stats.anomalies
        limits = config.defrag
        self.defrag = Defragmenter(anomalies, max_trackers=limits.max_trackers, memcap_bytes=limits.memcap_bytes,
                                   timeout_us=limits.timeout_us, max_fragments=limits.max_fragments)
        self.decoder = Decoder(anomalies, self.defrag)
        self.internal = InternalNetworks(config.internal)
        self.flows = FlowTable(config.flows, anomalies, self._session_for)
        self.source_names: list[str] = []

    def _session_for(self, flow: Flow) -> AppSession | None:
        internal = self.internal
        if (flow.client in internal) == (flow.server in internal):
            return None         # domestic or transit: not ours to inspect
        return AppSession(self.stats.anomalies)

    def replay(self, captures: Sequence[CaptureFile], progress: ProgressFn | None = None) -> ReplayResult:
        result = ReplayResult(self.stats)
        started = time.perf_counter()
        total = sum(c.size for c in captures)
        done = 0
        for capture in captures:
            self.source_names.append(capture.path)
            self._run_capture(capture, len(self.source_names) - 1, progress, done, total)
            done += capture.size
            if capture.damage:
                result.damaged.append(f"{capture.path}: {capture.damage}")
            capture.close()
        self.finish()
        result.seconds = time.perf_counter() - started
        return result

    def _run_capture(self, capture: CaptureFile, source: int, progress: ProgressFn | None,
                     done: int, total: int) -> None:
        stats = self.stats
        decode = self.decoder.decode
        packet = self.flows.packet
        pending = self.flows.ended       # flows ended by the table; a truthiness test per packet
        finish_flow = self._finish_flow
        packets = nbytes = decoded = 0
        first_ts = stats.first_ts_us
        ts = 0
        for ts, linktype, data in capture.frames():
            packets += 1
            nbytes += len(data)
            if not first_ts:
                first_ts = ts
            pkt = decode(ts, linktype, data)
            if pkt is not None:
                decoded += 1
                flow, direction = packet(pkt, source)
                if pkt.proto == PROTO_UDP and flow.consumer is not None:
                    flow.consumer.datagram(direction, pkt.payload, pkt.sport, pkt.dport)   # type: ignore[attr-defined]
                if pending:
                    for ended in self.flows.expired():
                        finish_flow(ended)
                    pending = self.flows.ended
            if progress is not None and not packets & 0x3FFF:
                progress(done + capture.offset, total, capture.path)
        stats.packets += packets
        stats.bytes += nbytes
        stats.decoded += decoded
        stats.first_ts_us = first_ts
        if ts > stats.last_ts_us:
            stats.last_ts_us = ts

    def finish(self) -> None:
        """End of input: every open flow ends (reason `shutdown`) and is exported."""
        for flow in self.flows.drain():
            self._finish_flow(flow)
        self.stats.flows = self.flows.created
        self.stats.icmp = self.decoder.icmp
        self.stats.other_ip = self.decoder.other_ip

    def _finish_flow(self, flow: Flow) -> None:
        session = flow.consumer
        if session is None:
            return
        assert isinstance(session, AppSession)
        event = flow_event(flow, pcap_filename=self.source_names[flow.source],
                           app_proto=session.event_app_proto(), app_fields=session.event_fields())
        for exporter in self.exporters:
            exporter.emit(event)
        self.stats.flow_events += 1

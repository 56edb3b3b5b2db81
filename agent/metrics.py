"""Prometheus metrics, built at scrape time from plain counters (no Counter.inc() per packet).

The workers keep `agent.stats.Stats` (plain ints and Counters); the live supervisor receives a
snapshot from each worker about once a second, and `AgentCollector` turns the sum of the
latest snapshots into metric families when Prometheus scrapes. Replay writes the same
families once, at the end, to a node-exporter textfile (`--metrics-textfile`).

Naming follows Prometheus practice: `egresswatch_` prefix, base units (seconds, bytes),
`_total` for counters, and only bounded label values — class ids, jurisdictions, directions,
severities, anomaly kinds from a fixed vocabulary, sink names. Never an address, a host name
or a value.
"""

from __future__ import annotations

import base64
import hmac
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    write_to_textfile,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.registry import Collector

from agent import __version__
from agent.errors import UsageError
from agent.stats import SCAN_BUCKETS, Stats
from geo.jurisdiction import MECHANISMS

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True)
class CaptureCounters:
    """What the kernel says about the capture sockets (PACKET_STATISTICS, summed)."""
    kernel_packets: int = 0
    kernel_drops: int = 0
    queue_freezes: int = 0

    def merge(self, other: CaptureCounters) -> None:
        self.kernel_packets += other.kernel_packets
        self.kernel_drops += other.kernel_drops
        self.queue_freezes += other.queue_freezes


@dataclass(slots=True)
class SinkCounters:
    name: str
    queue_depth: int = 0
    spool_bytes: int = 0
    sent: int = 0
    dropped: int = 0
    suppressed: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class WorkerResources:
    """What one capture worker process uses. process_* metrics describe the supervisor only,
    and a worker at 100 % of its core is the warning sign that the ring will overflow next."""
    index: int
    cpu_seconds: float
    resident_bytes: int


def own_resources(index: int) -> WorkerResources:
    """This process's CPU time so far and resident memory now (Linux /proc)."""
    # process_time(): nanosecond CPU clock; os.times() counts in 10 ms ticks, so a worker
    # that had little traffic read as 0 CPU seconds.
    cpu_seconds = time.process_time()
    try:
        with open("/proc/self/statm", "rb") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        resident_pages = 0
    return WorkerResources(index, cpu_seconds, resident_pages * _PAGE_SIZE)


@dataclass(slots=True)
class Snapshot:
    """Everything a scrape reports, summed over workers."""
    stats: Stats = field(default_factory=Stats)
    capture: CaptureCounters = field(default_factory=CaptureCounters)
    flows_active: int = 0
    reasm_memuse: int = 0
    eve_write_errors: int = 0    # failed writes/flushes of the EVE file (disk full, I/O error)
    sinks: list[SinkCounters] = field(default_factory=list)
    geoip_builds: dict[str, int] = field(default_factory=dict)   # embedded|country|asn -> epoch
    transfer_summary: dict[str, Any] | None = None   # TransferLedger.summary() of the latest year
    workers: list[WorkerResources] = field(default_factory=list)   # live capture: one per worker


class AgentCollector(Collector):
    """Metric families from the current snapshot; `snapshot` is called once per scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from families(self.snapshot())


def families(snap: Snapshot) -> Iterator[Metric]:
    stats = snap.stats
    build = GaugeMetricFamily("egresswatch_build_info", "Version of the running agent (always 1).",
                              labels=["version"])
    build.add_metric([__version__], 1)
    yield build
    geoip = GaugeMetricFamily("egresswatch_geoip_database_build_timestamp_seconds",
                              "Build time of each GeoIP database in use (Unix seconds).", labels=["database"])
    for label, epoch in sorted(snap.geoip_builds.items()):
        geoip.add_metric([label], epoch)
    yield geoip
    yield _counter("egresswatch_capture_packets_total", "Frames read by the agent.", stats.packets)
    yield _counter("egresswatch_capture_bytes_total", "Captured bytes of the frames read.", stats.bytes)
    yield _counter("egresswatch_capture_kernel_packets_total",
                   "Packets the kernel passed to the capture sockets (PACKET_STATISTICS).",
                   snap.capture.kernel_packets)
    yield _counter("egresswatch_capture_kernel_drops_total",
                   "Packets the kernel dropped because a capture ring was full.", snap.capture.kernel_drops)
    yield _counter("egresswatch_capture_kernel_queue_freezes_total",
                   "Times a capture ring's queue was frozen (TPACKET_V3 tp_freeze_q_cnt).",
                   snap.capture.queue_freezes)
    yield _labelled_counter("egresswatch_decode_anomalies_total",
                            "Odd or hostile traffic and limits that bit, by kind (dotted names).", ["kind"],
                            [((kind,), n) for kind, n in stats.anomalies.items() if not kind.endswith("_bytes")])
    yield _gauge("egresswatch_flows_active", "Flows in the flow tables now.", snap.flows_active)
    if snap.workers:
        yield _labelled_counter("egresswatch_worker_cpu_seconds_total",
                                "CPU time (user + system) each capture worker process has used.", ["worker"],
                                [((w.index,), w.cpu_seconds) for w in snap.workers])
        resident = GaugeMetricFamily("egresswatch_worker_resident_memory_bytes",
                                     "Resident memory of each capture worker process.", labels=["worker"])
        for w in sorted(snap.workers, key=lambda w: w.index):
            resident.add_metric([str(w.index)], w.resident_bytes)
        yield resident
    yield _labelled_counter("egresswatch_flows_total",
                            "Ended flows that crossed the inside/outside boundary, by cross-border verdict.",
                            ["cross_border"], [((k,), n) for k, n in stats.flows_ended.items()])
    yield _counter("egresswatch_reassembly_gaps_total", "Holes in reassembled TCP streams.",
                   stats.anomalies["tcp.gap"])
    yield _counter("egresswatch_reassembly_memcap_hits_total",
                   "Out-of-order segments not held because a reassembly memory limit was reached.",
                   stats.anomalies["limit.reasm_memcap"] + stats.anomalies["limit.reasm_stream"])
    yield _gauge("egresswatch_reassembly_memuse_bytes", "Out-of-order bytes held for reassembly now.",
                 snap.reasm_memuse)
    yield _labelled_counter("egresswatch_egress_bytes_total",
                            "Bytes sent out by the inside party of boundary-crossing flows, by the outside "
                            "party's jurisdiction and the flow's direction.", ["jurisdiction", "direction"],
                            stats.egress_bytes.items())
    yield _labelled_counter("egresswatch_classified_values_total",
                            "Distinct personal or important data values found leaving, by class and "
                            "jurisdiction.", ["class", "jurisdiction"], stats.classified.items())
    yield _labelled_counter("egresswatch_validator_rejects_total",
                            "Pattern candidates rejected by a validator (checksum, boundary), by class.",
                            ["class"], [((k,), n) for k, n in stats.rejected.items()])
    yield _labelled_counter("egresswatch_alerts_total", "Alerts raised, by class and severity.",
                            ["class", "severity"], stats.alerts_by.items())
    yield _labelled_counter("egresswatch_classified_flows_total",
                            "Ended boundary-crossing flows that carried personal or important data out, by "
                            "final severity (alerts keep the severity of the moment they were raised).",
                            ["severity"], [((k,), n) for k, n in stats.flows_by_severity.items()])
    yield _labelled_counter("egresswatch_transfers_total",
                            "Boundary-crossing flows by destination register status.", ["status"],
                            [((k,), n) for k, n in stats.transfers.items()])
    depth = GaugeMetricFamily("egresswatch_sink_queue_depth", "Events waiting in a sink, spooled ones "
                              "included.", labels=["sink"])
    spool = GaugeMetricFamily("egresswatch_sink_spool_bytes", "Bytes in a sink's on-disk spool.", labels=["sink"])
    sent = CounterMetricFamily("egresswatch_sink_sent_events", "Events a sink delivered.", labels=["sink"])
    dropped = CounterMetricFamily("egresswatch_sink_dropped_events", "Events a sink dropped (spool full: "
                                  "oldest first).", labels=["sink"])
    suppressed = CounterMetricFamily("egresswatch_sink_suppressed_events", "Events a sink held back by its "
                                     "per-flow rate limit.", labels=["sink"])
    retries = CounterMetricFamily("egresswatch_sink_retries", "Failed deliveries a sink retried.", labels=["sink"])
    for sink in snap.sinks:
        depth.add_metric([sink.name], sink.queue_depth)
        spool.add_metric([sink.name], sink.spool_bytes)
        sent.add_metric([sink.name], sink.sent)
        dropped.add_metric([sink.name], sink.dropped)
        suppressed.add_metric([sink.name], sink.suppressed)
        retries.add_metric([sink.name], sink.retries)
    yield from (depth, spool, sent, dropped, suppressed, retries)
    yield _counter("egresswatch_eve_write_errors_total",
                   "Failed writes or flushes of the EVE file (disk full, I/O error); the events in them "
                   "may be lost.", snap.eve_write_errors)
    if snap.transfer_summary is not None:
        summary = snap.transfer_summary
        persons = GaugeMetricFamily("egresswatch_transfer_persons_estimate",
                                    "Estimated persons whose personal information crossed the border this "
                                    "counting year (since the agent started, or kept across restarts in the "
                                    "ledger file), by kind.", labels=["kind"])
        persons.add_metric(["personal"], summary["nonsensitive_persons"])
        persons.add_metric(["sensitive"], summary["sensitive_persons"])
        yield persons
        required = GaugeMetricFamily("egresswatch_transfer_required_mechanism",
                                     "1 for the transfer mechanism this year's volume calls for under the "
                                     "jurisdiction profile's thresholds, 0 for the others.", labels=["mechanism"])
        for mechanism in MECHANISMS:
            required.add_metric([mechanism], 1 if summary["required_mechanism"] == mechanism else 0)
        yield required
    buckets = []
    running = 0
    for bound, count in zip((*SCAN_BUCKETS, float("inf")), stats.scan_buckets):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    yield HistogramMetricFamily("egresswatch_scan_duration_seconds",
                                "Classification time (Hyperscan and confirmation) per flow direction.",
                                buckets=buckets, sum_value=stats.scan_seconds)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name.removesuffix("_total"), documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled_counter(name: str, documentation: str, labels: list[str],
                      samples: Iterable[tuple[tuple[str, ...], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name.removesuffix("_total"), documentation, labels=labels)
    for values, count in sorted(samples):
        family.add_metric([str(v) for v in values], count)
    return family


def registry_for(snapshot: Callable[[], Snapshot], *, process: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(snapshot))
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


def latest_transfer_summary(stats: Stats, profile: Any, sensitivity: dict[str, bool]) -> dict[str, Any] | None:
    years = stats.ledger.years()
    return stats.ledger.summary(years[-1], profile, sensitivity) if years else None


def write_textfile(path: str, snapshot: Snapshot) -> None:
    """node-exporter textfile collector format; written atomically (temp file + rename)."""
    try:
        write_to_textfile(path, registry_for(lambda: snapshot, process=False))
    except OSError as exc:
        raise UsageError(f"cannot write metrics textfile {path}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class MetricsListen:
    host: str = "127.0.0.1"
    port: int = 9917
    certfile: str = ""            # TLS when set (with keyfile)
    keyfile: str = ""
    basic_auth_user: str = ""     # basic auth when set; the password comes from a file, never the command line
    basic_auth_password_file: str = ""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--metrics-listen wants ADDRESS:PORT like 127.0.0.1:9917; got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_metrics(listen: MetricsListen, registry: CollectorRegistry) -> ThreadingWSGIServer:
    """Start /metrics in a daemon thread: prometheus-client's WSGI app and threading server, with
    optional TLS and HTTP basic auth (the client's own server has TLS but no basic auth)."""
    app = make_wsgi_app(registry)
    if listen.basic_auth_user:
        app = _basic_auth(app, listen.basic_auth_user, _read_secret(listen.basic_auth_password_file))
    try:
        server = make_server(listen.host, listen.port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise UsageError(f"cannot listen for metrics on {listen.host}:{listen.port}: {exc.strerror}") from None
    if listen.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(listen.certfile, listen.keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            server.server_close()
            raise UsageError(f"metrics TLS certificate {listen.certfile}: {exc}") from None
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _read_secret(path: str) -> bytes:
    if not path:
        raise UsageError("metrics basic auth needs a password file (basic_auth_password_file)")
    try:
        with open(path, "rb") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read metrics password file {path}: {exc.strerror}") from None


def _basic_auth(app: Callable, user: str, password: bytes) -> Callable:
    expected = b"Basic " + base64.b64encode(user.encode() + b":" + password)

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="egresswatch"'),
                                                ("Content-Type", "text/plain")])
            return [b"unauthorized\n"]
        return app(environ, start_response)
    return guarded

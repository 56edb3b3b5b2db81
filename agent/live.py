"""`egresswatch run`: the live agent on a span port.

Process layout:
- the supervisor (the process that was started) opens the capture rings, the EVE file, the
  sinks and the metrics listener while it still has the privileges to, then drops them
  (`agent.privileges`), forks one worker per ring and closes its own copies of the rings;
- each worker runs a Pipeline over its ring (the kernel's fanout hash gives it whole flows)
  and sends its events, in batches, and a counter snapshot about once a second, to the
  supervisor over a pipe;
- the supervisor writes the events to the exporters (EVE, syslog, webhook: one writer per
  output, so lines never interleave) and serves /metrics from the sum of the latest snapshots.

Signals (to the supervisor; workers ignore SIGINT so a terminal's Ctrl-C is coordinated):
- SIGTERM / SIGINT: the workers stop reading, end every open flow (reason `shutdown`) through
  classification and export, send their last events and counters, and exit; the supervisor
  writes everything out, closes the exporters (sinks drain or spool) and exits 0.
- SIGHUP: the supervisor reopens its output files (logrotate); the workers reload rule packs
  and GeoIP databases (new flows use them; a bad file is reported and the old one kept).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from agent import privileges
from agent.capture.afpacket import AfPacketRing, KernelStats
from agent.config import Config
from agent.errors import UsageError
from agent.metrics import (
    CaptureCounters,
    SinkCounters,
    Snapshot,
    WorkerResources,
    latest_transfer_summary,
    own_resources,
)
from agent.pipeline import Exporter, Pipeline, compile_rules
from agent.stats import Stats
from geo.ledger import LedgerFile, TransferLedger, ledger_path

logger = logging.getLogger("egresswatch")

_SNAPSHOT_EVERY_S = 1.0
_LEDGER_SAVE_EVERY_S = 60.0      # at most this much of the year's counts is lost to a crash
_POLL_MS = 100
_PR_SET_PDEATHSIG = 1


@dataclass(slots=True)
class WorkerSnapshot:
    stats: Stats
    kernel: KernelStats
    flows_active: int
    reasm_memuse: int
    geoip_builds: dict[str, int] = field(default_factory=dict)
    resources: WorkerResources | None = None


class _Batch:
    """The worker's exporter: events wait here until the block they came from is done."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def _worker(index: int, ring: AfPacketRing, pipeline: Pipeline, batch: _Batch, conn: Connection) -> None:
    flags = {"stop": False, "reload": False}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: flags.__setitem__("stop", True))
    signal.signal(signal.SIGHUP, lambda *_: flags.__setitem__("reload", True))
    _die_with_parent()
    next_snapshot = time.monotonic() + _SNAPSHOT_EVERY_S
    try:
        while not flags["stop"]:
            frames = ring.next_block_frames(_POLL_MS)
            if frames is not None:
                pipeline.run_frames(frames, 0)
            else:
                pipeline.idle(time.time_ns() // 1000)
            if batch.events:
                conn.send(("events", batch.events))
                batch.events = []
            if flags["reload"]:
                flags["reload"] = False
                pipeline.reload()
            if time.monotonic() >= next_snapshot:
                next_snapshot = time.monotonic() + _SNAPSHOT_EVERY_S
                conn.send(("snapshot", _snapshot(pipeline, ring, index)))
        # Stop: what the kernel already put in the ring was captured, so it is processed too.
        while (frames := ring.next_block_frames(0)) is not None:
            pipeline.run_frames(frames, 0)
        pipeline.finish()
        conn.send(("events", batch.events))
        conn.send(("done", _snapshot(pipeline, ring, index)))
    except BrokenPipeError:
        pass                                # the supervisor is gone; nothing left to tell
    finally:
        ring.close()
        conn.close()


def _snapshot(pipeline: Pipeline, ring: AfPacketRing, index: int) -> WorkerSnapshot:
    pipeline.stats.rejected.clear()
    pipeline.stats.rejected.update(pipeline.engine.rejected)
    return WorkerSnapshot(pipeline.stats, ring.read_stats(), len(pipeline.flows), pipeline.flows.budget.used,
                          dict(pipeline.geo.database_builds), own_resources(index))


def _chown_tree(top: str, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)


def _load_lazy_modules() -> None:
    """Import what Python would otherwise import on first use, while its files are readable:
    after the switch to --user the interpreter's own directory may not be (a Python installed
    under /root, say), and a codec first met in traffic would then fail to load."""
    import encodings
    import importlib
    import multiprocessing.popen_fork  # noqa: F401 - used by Process.start() after the drop
    import pkgutil

    for module in pkgutil.iter_modules(encodings.__path__):
        try:
            importlib.import_module(f"encodings.{module.name}")
        except Exception:   # platform codecs (mbcs, oem) that do not exist here
            continue


def _die_with_parent() -> None:
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Supervisor:
    def __init__(self, config: Config, rings: Sequence[AfPacketRing], exporters: Sequence[Exporter],
                 *, strict: bool = False) -> None:
        self.config = config
        self.rings = list(rings)
        self.exporters = list(exporters)
        # Built now, while every rule, database and module file is still readable: the workers
        # run after privileges are dropped and only use what is already loaded.
        self.batches = [_Batch() for _ in self.rings]
        # The year's counts so far, and the key the workers' value digests must share with them
        # (and with each other) for sketches to merge; without a ledger file, a fresh key.
        path = ledger_path(config.ledger, live=True)
        self.ledger_file = LedgerFile(path) if path else None
        digest_key, self.earlier = os.urandom(16), TransferLedger()
        if self.ledger_file is not None:
            self.ledger_file.lock()              # held by the supervisor and its workers until exit
            try:
                digest_key, self.earlier = self.ledger_file.load()
            except BaseException:
                self.ledger_file.close()
                raise
        self.digest_key = digest_key
        self.next_ledger_save = time.monotonic() + _LEDGER_SAVE_EVERY_S
        rules = compile_rules(config)           # once for all workers
        self.pipelines = [Pipeline(config, [batch], Stats(), strict=strict, digest_key=digest_key, rules=rules)
                          for batch in self.batches]
        for pipeline in self.pipelines:
            pipeline.source_names.append(None)
        self.latest: dict[int, WorkerSnapshot] = {}
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.connections: dict[Connection, int] = {}
        self.stop_requested = False
        self.hup_requested = False
        self.events = 0

    def snapshot(self) -> Snapshot:
        """The sum over workers of their latest counters (called by the metrics thread)."""
        total = Snapshot()
        total.stats.ledger.merge(self.earlier)
        for worker in list(self.latest.values()):
            total.stats.merge(worker.stats)
            total.capture.merge(CaptureCounters(worker.kernel.packets, worker.kernel.drops, worker.kernel.freezes))
            total.flows_active += worker.flows_active
            total.reasm_memuse += worker.reasm_memuse
            total.geoip_builds.update(worker.geoip_builds)
            if worker.resources is not None:
                total.workers.append(worker.resources)
        pipeline = self.pipelines[0]
        total.transfer_summary = latest_transfer_summary(total.stats, pipeline.jurisdiction, pipeline.sensitivity)
        total.sinks = [stats for exporter in self.exporters if (stats := _sink_counters(exporter)) is not None]
        total.eve_write_errors = sum(getattr(exporter, "write_errors", 0) for exporter in self.exporters)
        return total

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        for index, ring in enumerate(self.rings):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_worker, name=f"egresswatch-worker-{index}",
                                      args=(index, ring, self.pipelines[index], self.batches[index], sender))
            process.start()
            sender.close()
            self.processes.append(process)
            self.connections[receiver] = index
        for ring in self.rings:
            ring.close()                 # the workers hold the sockets; a dead worker leaves the group

    def request_stop(self, *_: object) -> None:
        self.stop_requested = True

    def request_reload(self, *_: object) -> None:
        self.hup_requested = True

    def run(self) -> int:
        """Relay events until every worker has finished; 0 after a clean stop."""
        signalled = False
        failed = False
        while self.connections:
            if self.stop_requested and not signalled:
                signalled = True
                for process in self.processes:
                    if process.is_alive() and process.pid:
                        os.kill(process.pid, signal.SIGTERM)
            if self.hup_requested:
                self.hup_requested = False
                self._reload()
            if time.monotonic() >= self.next_ledger_save:
                self.next_ledger_save = time.monotonic() + _LEDGER_SAVE_EVERY_S
                self.save_ledger()
            for conn in wait(list(self.connections), timeout=0.5):
                index = self.connections[conn]   # type: ignore[index]
                try:
                    kind, payload = conn.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    del self.connections[conn]   # type: ignore[arg-type]
                    if not self.stop_requested or index not in self.latest:
                        logger.error("capture worker %d ended unexpectedly; stopping", index)
                        failed = True
                        self.stop_requested = True
                    continue
                if kind == "events":
                    for event in payload:
                        for exporter in self.exporters:
                            exporter.emit(event)
                    self.events += len(payload)
                    for exporter in self.exporters:
                        flush = getattr(exporter, "flush", None)
                        if flush is not None:
                            flush()
                else:
                    self.latest[index] = payload
                    if kind == "done":
                        del self.connections[conn]  # type: ignore[arg-type]
        for process in self.processes:
            process.join(timeout=5)
        return 1 if failed else 0

    def save_ledger(self) -> None:
        """Write the year's counts (the file's, plus every worker's so far). A failure is logged
        and retried at the next save: the counts stay in memory meanwhile."""
        if self.ledger_file is None:
            return
        ledger = TransferLedger()
        ledger.merge(self.earlier)
        for worker in list(self.latest.values()):
            ledger.merge(worker.stats.ledger)
        try:
            self.ledger_file.save(self.digest_key, ledger)
        except OSError as exc:
            logger.error("cannot write the ledger %s: %s", self.ledger_file.path, exc.strerror or exc)

    def _reload(self) -> None:
        for exporter in self.exporters:
            reopen = getattr(exporter, "reopen", None)
            if reopen is not None:
                reopen()
        for process in self.processes:
            if process.is_alive() and process.pid:
                os.kill(process.pid, signal.SIGHUP)
        logger.warning("SIGHUP: output files reopened; workers reload rules and GeoIP databases")


def _sink_counters(exporter: Exporter) -> SinkCounters | None:
    stats = getattr(exporter, "stats", None)
    if stats is None:
        return None
    current = stats()
    return SinkCounters(current.name, current.queue_depth, current.spool_bytes, current.sent, current.dropped,
                        current.suppressed, current.retries)


def run_live(config: Config, *, user: str, drop_privileges: bool, strict: bool = False) -> int:
    """Open everything privileged, drop privileges, run the workers until SIGTERM/SIGINT."""
    from agent.capture.afpacket import open_rings
    from agent.exporters import open_exporters, spool_directories
    from agent.metrics import registry_for, serve_metrics

    capture = config.capture
    if not capture.interface:
        raise UsageError("no capture interface: give --interface IF (or [capture] interface)")
    if drop_privileges and os.geteuid() == 0:
        privileges.resolve_user(user)             # a bad --user is a usage error, before anything opens
    rings = open_rings(capture.interface, config.workers, promiscuous=capture.promiscuous,
                       bpf_expression=capture.bpf or None, options=capture.ring)
    try:
        exporters = open_exporters(config, append=True)
        supervisor = Supervisor(config, rings, exporters, strict=strict)
        server = serve_metrics(config.metrics, registry_for(supervisor.snapshot)) if config.metrics.port else None
        if drop_privileges:
            _load_lazy_modules()
            if os.geteuid() == 0:
                uid, gid = privileges.resolve_user(user)
                for directory in spool_directories(exporters):
                    _chown_tree(directory, uid, gid)     # the sinks roll spool segments as --user
            privileges.drop(user)
        if supervisor.ledger_file is not None:
            supervisor.ledger_file.check_writable()   # as the user that will write it
    except BaseException:
        for ring in rings:
            ring.close()
        raise
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGHUP, supervisor.request_reload)
    logger.info("capturing on %s with %d worker(s)", capture.interface, len(rings))
    try:
        supervisor.start()
        status = supervisor.run()
    finally:
        supervisor.save_ledger()          # after the workers' last snapshots, and whatever failed
        if supervisor.ledger_file is not None:
            supervisor.ledger_file.close()
        for exporter in exporters:
            exporter.close()
        if server is not None:
            server.shutdown()
    return status

"""The replay loop: the one module that wires capture, decode, flows, apps and export together.

Data flows one way: frames -> packets -> (flow, direction) -> reassembled bytes -> app session
-> finished flows -> events -> exporters. Only flows that cross the inside/outside boundary
get an app session and reassembly; the others are counted and cost one dict lookup per packet.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.apps.dns import DnsTcpAnswers
from agent.apps.session import AppSession
from agent.capture.pcapfile import CaptureFile
from agent.config import Config
from agent.apps.ftp import FtpDataRegistry
from agent.decode import PROTO_TCP, PROTO_UDP, Decoder, Packet
from agent.defrag import Defragmenter
from agent.errors import UsageError
from agent.events import alert_event, flow_event
from agent.exporters import Exporter
from agent.fastpath import run_frames
from agent.flows import Flow, FlowTable
from agent.reassembly import TOCLIENT, TOSERVER
from agent.stats import SEVERITY_NAMES, Stats
from classifiers.classes import RULES, SENSITIVITY_PROFILES
from classifiers.engine import Engine, ScanStream, cache_directory
from classifiers.findings import SEVERITY_HIGH, Findings, FindingsBudget
from classifiers.rulepacks import PackClass, load_packs
from geo.jurisdiction import Jurisdiction, load_profile
from geo.ledger import counting_year
from geo.networks import InternalNetworks
from geo.passive_dns import PassiveDns
from geo.registers import Register, Transfer, load_register
from geo.resolver import GeoResolver, geo_databases

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]   # (bytes done, bytes total, current file)
Frame = tuple[int, int, memoryview]             # (timestamp µs, link type, frame bytes)
_len_frag = struct.Struct("!2xH2xH").unpack_from  # IPv4 total length and fragment field
_AFTER_LAST_FRAME = 1 << 62
_STRICTNESS = {"covered": 0, "none": 1, "expired": 2, "denied": 3}   # register verdicts, mildest first
_DNS_PORT = 53
# The consumer of UDP/53 flows that do not cross the boundary: no app session, but not None, so
# the fast path leaves every DNS response to the slow path, which feeds the passive DNS map.
_DNS_ONLY = object()


@dataclass(frozen=True, slots=True)
class Shard:
    """Which share of the flows a replay worker owns: those whose hash mod `count` is `index`."""
    index: int
    count: int


@dataclass(frozen=True, slots=True)
class CompiledRules:
    engine: Engine
    pack_classes: dict[str, PackClass]


def compile_rules(config: Config) -> CompiledRules:
    """The built-in rules and the configured packs in one Hyperscan database (from the rule
    cache when it holds this exact set)."""
    pack_rules, pack_classes = load_packs(config.rule_packs)
    return CompiledRules(Engine(RULES + tuple(pack_rules), cache_dir=cache_directory(config.rule_cache)),
                         pack_classes)


def shard_of(pkt: Packet, count: int) -> int:
    """By the pair of addresses, the same both ways and in every process (no `hash()` salt).
    Not by ports: an FTP data connection must land with its control connection."""
    a, b = pkt.src, pkt.dst
    if a > b:
        a, b = b, a
    return zlib.crc32(b"%d|" % pkt.vlan + a + b) % count


def jurisdiction_for(config: Config) -> Jurisdiction:
    """The configured profile, its home set replaced by --home (label e.g. "CN,HK"), CIIO applied."""
    profile = load_profile(config.profile)
    if config.home is not None and frozenset(config.home) != profile.home:
        profile = profile.with_home(config.home)
    return profile.with_ciio(config.ciio) if config.ciio else profile


class _TimedScan:
    """A flow direction's ScanStream, timed: the scan duration histogram is observed per flow."""

    __slots__ = ("stream", "seconds")

    def __init__(self, stream: ScanStream) -> None:
        self.stream = stream
        self.seconds = 0.0

    def write(self, data: bytes | memoryview) -> None:
        started = time.perf_counter()
        self.stream.write(data)
        self.seconds += time.perf_counter() - started

    def close(self) -> None:
        started = time.perf_counter()
        self.stream.close()
        self.seconds += time.perf_counter() - started


def _end_order(flow: Flow) -> tuple[int, int]:
    return flow.last, flow.flow_id


def _drain_order(flow: Flow) -> tuple[int, int]:
    return flow.touched, flow.flow_id


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

    def __init__(self, config: Config, exporters: Sequence[Exporter], stats: Stats, *,
                 fast_path: bool = True, strict: bool = False, shard: Shard | None = None,
                 digest_key: bytes | None = None, rules: CompiledRules | None = None) -> None:
        """`rules`: compiled once and shared by the pipelines of one process tree (workers)."""
        self.config = config
        self.shard = shard               # replay worker: only this share of the flows (agent.workers)
        self.strict = strict             # re-raise internal errors (tests) instead of counting them
        self.fast_path = fast_path       # False: every frame through the general path (tests compare)
        self.exporters = exporters
        self.stats = stats
        anomalies = stats.anomalies
        if shard is not None:
            # Every worker decodes every frame it cannot place by flow, so what decoding counts
            # goes to a scratch counter first and is kept only by the frame's owner.
            anomalies = self.decode_anomalies = Counter()
        limits = config.defrag
        self.defrag = Defragmenter(anomalies, max_trackers=limits.max_trackers, memcap_bytes=limits.memcap_bytes,
                                   timeout_us=limits.timeout_us, max_fragments=limits.max_fragments)
        self.decoder = Decoder(anomalies, self.defrag)
        self.internal = InternalNetworks(config.internal)
        self.flows = FlowTable(config.flows, stats.anomalies, self._session_for)
        self.geo = GeoResolver(geo_databases(config.geoip_db), anomalies)
        self.jurisdiction = jurisdiction_for(config)
        rules = rules or compile_rules(config)
        self.engine, self.pack_classes = rules.engine, rules.pack_classes
        self.finding_limits = config.findings
        self.sensitivity = SENSITIVITY_PROFILES[config.sensitivity_profile]
        self.register = load_register(config.register) if config.register else Register.empty()
        self.findings_budget = FindingsBudget(config.findings.memory_budget_bytes, stats.anomalies)
        self.ftp_data = FtpDataRegistry(stats.anomalies)   # data connections announced on FTP control
        # Hostnames for register lookups when a flow carries none (no SNI): what DNS answered.
        self.passive_dns = PassiveDns(config.passive_dns_addresses, stats.anomalies) \
            if config.passive_dns_addresses else None
        # Keys the digests of values (distinct counting, the year's ledger); never leaves the
        # process. Workers of one run share it, so their counts merge.
        self.digest_key = digest_key or os.urandom(16)
        self.source_names: list[str | None] = []   # capture file per source; None when live
        self.frame_no = 0                     # frames read so far (counted by replay workers only)
        self.frames_read = self.bytes_read = 0
        self.emit_key: tuple[int, ...] = (0,)  # where in one-worker order the next event belongs
        self._ip_counts = (0, 0)              # decoder icmp/other_ip as of this worker's last frame
        self._emitted = 0

    def _session_for(self, flow: Flow) -> AppSession | None:
        internal = self.internal
        client_inside = flow.client in internal
        if client_inside == (flow.server in internal):
            # Both inside or both outside: not a transfer out of the network. Only inside
            # resolvers name destinations: an outside server on port 53 may be anyone's, and
            # its answer must not cover an upload (see _transfer).
            if flow.sport == _DNS_PORT and client_inside and self.passive_dns is not None:
                if flow.proto == PROTO_UDP:
                    # Always, not only while a register reads passive DNS: a register that
                    # starts to (SIGHUP) must find the answers of DNS flows already open.
                    return _DNS_ONLY       # type: ignore[return-value]
                if self._passive_dns_wanted() is not None:
                    return self._dns_tcp_answers()
            return None
        findings = Findings(self.finding_limits, self.sensitivity, self.digest_key, self.pack_classes,
                            self.findings_budget)
        flow.user = findings
        # Egress: the inside client's requests. Ingress: what the inside server sends back.
        inspect = TOSERVER if client_inside else TOCLIENT
        if flow.proto == PROTO_TCP:
            ftp_data = self.ftp_data.claim(flow.client, flow.server, flow.sport, flow.cport, flow.start)
            ftp_expect = self.ftp_data.expecter(flow)
        else:
            # No FTP over UDP; and no closure over the flow, which would make the flow and its
            # session a reference cycle that only the garbage collector can free.
            ftp_data = ftp_expect = None
        return AppSession(self.stats.anomalies, inspect, _TimedScan(self.engine.stream(findings.add)),  # type: ignore[arg-type]
                          strict=self.strict, ftp_data=ftp_data, ftp_expect=ftp_expect)

    def _dns_tcp_answers(self) -> DnsTcpAnswers:
        table = self.flows
        return DnsTcpAnswers(self._passive_dns_wanted, lambda: table.now, table.budget, self.stats.anomalies)

    def _passive_dns_wanted(self) -> PassiveDns | None:
        """The passive DNS map, when something reads it: only a register that matches hostnames
        does. Parsing every DNS answer was a fifth of the time of a DNS-heavy replay."""
        return self.passive_dns if self.register.matches_names else None

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
        def tick() -> None:
            if progress is not None:
                progress(done + capture.offset, total, capture.path)

        self.run_frames(capture.frames(), source, tick if progress else None)

    def run_frames(self, frames: Iterable[Frame], source: int = 0, tick: Callable[[], None] | None = None) -> None:
        """Feed frames from one source (a capture file, or one block of a live ring)."""
        stats = self.stats
        decode = self.decoder.decode
        table = self.flows
        packet = table.packet
        bypass = table.bypass
        shard = self.shard
        keeps = self._shard_keeps
        passive_dns = self._passive_dns_wanted()
        internal = self.internal

        def slow(ts: int, linktype: int, data: memoryview) -> None:
            flow = None
            try:
                pkt = decode(ts, linktype, data)
                # Every worker reads every inside resolver's answers (a name is looked up in
                # the worker of the upload, not of the DNS flow), before the shard decides.
                if (pkt is not None and pkt.sport == _DNS_PORT and pkt.proto == PROTO_UDP
                        and passive_dns is not None and pkt.src in internal):
                    passive_dns.observe(pkt.payload, pkt.ts)
                if shard is not None and not keeps(pkt):
                    if table.ended:               # the clock moved: this worker's flows may end here
                        self._finish_ended(table.expired(), self.frame_no)
                    return
                if pkt is None:
                    return
                flow, direction = packet(pkt, source)
                findings = flow.user
                if findings is not None:
                    if pkt.proto == PROTO_UDP:
                        flow.consumer.datagram(direction, pkt.payload, pkt.sport, pkt.dport)  # type: ignore[union-attr]
                    if findings.changed:
                        self.emit_key = (self.frame_no, 0, 0, 0)
                        self._maybe_alert(flow, findings)   # type: ignore[arg-type]
                # A reassembled flow whose consumer needs no more bytes: ciphertext after the
                # handshake (AppSession), DNS over TCP whose answers are no longer read.
                if flow.streams is not None and flow.consumer.done:     # type: ignore[union-attr]
                    bypass(flow)
                if table.ended:
                    self._finish_ended(table.expired(), self.frame_no)
            except Exception as exc:      # a bug met by odd traffic must not end the run
                self._contain(exc, flow)

        if shard is not None:
            frames = self._owned_frames(frames)
        if self.fast_path:
            packets, nbytes = run_frames(frames, table, slow, tick)
        else:
            packets = nbytes = 0
            for ts, linktype, data in frames:
                packets += 1
                nbytes += len(data)
                slow(ts, linktype, data)
        if shard is None:
            stats.packets += packets
            stats.bytes += nbytes
        elif shard.index == 0:               # every worker reads every frame; one counts them
            stats.packets, stats.bytes = self.frames_read, self.bytes_read

    def reload(self) -> None:
        """SIGHUP: read the rule packs, the destination register and the GeoIP databases again;
        flows that start from now on use them (the register applies to every event from now on).
        A file that no longer loads is reported and the current ones kept."""
        try:
            geo = GeoResolver(geo_databases(self.config.geoip_db), self.stats.anomalies)
            rules = compile_rules(self.config)
            register = load_register(self.config.register) if self.config.register else Register.empty()
        except UsageError as exc:
            logger.error("reload failed, keeping the current rules, register and GeoIP databases: %s", exc)
            return
        self.geo.close()
        self.geo, self.engine, self.pack_classes, self.register = geo, rules.engine, rules.pack_classes, register

    def idle(self, now_us: int) -> None:
        """Live capture with no traffic: move the flow clock to wall time so idle flows end."""
        try:
            self.flows.advance(now_us)
            if self.flows.ended:
                self._finish_ended(self.flows.expired(), self.frame_no)
        except Exception as exc:
            self._contain(exc, None)

    def _owned_frames(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """A replay worker's frames: those of its own flows, and those that cannot be placed
        without decoding. Keeps `frame_no` (for the order of merged output) and counts every
        frame read. A plain untagged IPv4 TCP/UDP frame of another worker's flow is dropped here
        with one CRC, not decoded: by the same checks as the fast path, decoding it would count
        nothing, and all it would do in this worker is move the flow clock. Except a DNS answer
        over UDP while passive DNS is read: every worker needs every answer."""
        shard = self.shard
        assert shard is not None
        index, count = shard.index, shard.count
        table = self.flows
        crc32 = zlib.crc32
        untagged = b"0|"
        number = self.frame_no
        dns_answers = self._passive_dns_wanted() is not None
        for frame in frames:
            number += 1
            ts, linktype, data = frame
            length = len(data)
            self.frames_read += 1
            self.bytes_read += length
            if linktype == 1 and length >= 54 and data[14] == 0x45 and data[12] == 8 and data[13] == 0:
                total, frag = _len_frag(data, 14)
                proto = data[23]
                if not frag & 0x3FFF and 40 <= total <= length - 14 and (
                        (proto == 6 and 20 <= (data[46] >> 4) << 2 <= total - 20)
                        or (proto == 17 and 8 <= (data[38] << 8 | data[39]) <= total - 20)):
                    a = bytes(data[26:30])
                    b = bytes(data[30:34])
                    if a > b:
                        a, b = b, a
                    if crc32(untagged + a + b) % count != index and not (
                            dns_answers and proto == 17 and data[34] == 0 and data[35] == _DNS_PORT):
                        if ts > table.now:
                            self.frame_no = number
                            table.advance(ts)
                            if table.ended:
                                self._finish_ended(table.expired(), number)
                        continue
            self.frame_no = number
            yield frame
        self.frame_no = number

    def _shard_keeps(self, pkt: Packet | None) -> bool:
        """Whether this worker owns the frame: its flow's hash, or the frame number when it
        carries no flow. Decoder counts of frames owned elsewhere are discarded."""
        shard = self.shard
        assert shard is not None
        scratch = self.decode_anomalies
        owner = shard_of(pkt, shard.count) if pkt is not None else self.frame_no % shard.count
        if owner != shard.index:
            if pkt is not None:
                self.flows.advance(pkt.ts)     # sweep at the same frames as a single worker does
            scratch.clear()
            self.decoder.icmp, self.decoder.other_ip = self._ip_counts
            return False
        if scratch:
            self.stats.anomalies.update(scratch)
            scratch.clear()
        self._ip_counts = (self.decoder.icmp, self.decoder.other_ip)
        return True

    def _finish_ended(self, ended: list[Flow], frame_no: int) -> None:
        """Export flows that ended at one frame, in a canonical order (so that N workers merge
        into exactly the output of one)."""
        if len(ended) > 1:
            ended.sort(key=_end_order)
        for flow in ended:
            self.emit_key = (frame_no, 1, flow.last, flow.flow_id)
            self._finish_flow(flow)

    def finish(self) -> None:
        """End of input: every open flow ends (reason `shutdown`) and is exported."""
        try:
            self._finish_ended(self.flows.expired(), self.frame_no)
            remaining = sorted(self.flows.drain(), key=_drain_order)
        except Exception as exc:
            self._contain(exc, None)
            remaining = []
        for flow in remaining:
            try:
                self.emit_key = (_AFTER_LAST_FRAME, 1, flow.touched, flow.flow_id)
                self._finish_flow(flow)
            except Exception as exc:
                self._contain(exc, None)
        self.stats.flows = self.flows.created
        self.stats.rejected = Counter(self.engine.rejected)
        if self.shard is None:
            self.stats.icmp = self.decoder.icmp
            self.stats.other_ip = self.decoder.other_ip
        else:
            self.stats.icmp, self.stats.other_ip = self._ip_counts

    def _contain(self, exc: Exception, flow: Flow | None) -> None:
        """Count and log (once per kind) an internal error; stop inspecting the flow it hit."""
        if self.strict:
            raise exc
        kind = f"internal.{type(exc).__name__}"
        if not self.stats.anomalies[kind]:
            logger.error("internal error while processing traffic (counted as %s; further ones only "
                         "counted)", kind, exc_info=exc)
        self.stats.anomalies[kind] += 1
        if flow is not None:
            self.flows.bypass(flow)

    def _maybe_alert(self, flow: Flow, findings: Findings) -> None:
        """At most one alert per flow, as soon as its export direction carries a valid value, unless
        the other end is known to be at home (or special-purpose), or the destination register
        covers the transfer (unless `alert_covered`). An unknown country alerts: not knowing
        where data went is no reason to stay silent about it. An expired basis raises the
        severity one level; a denied destination makes it high."""
        findings.changed = False
        if flow.alerted:
            return
        flow.alerted = True                # decided once per flow, whatever the decision
        geo = self._geo_fields(flow)
        if geo["cross_border"] is False:
            return                         # a home-jurisdiction or special-purpose destination
        transfer = self._transfer(flow)
        if transfer.status == "covered" and not self.config.alert_covered:
            return
        event = alert_event(flow, findings.event_fields(), pcap_filename=self.source_names[flow.source],
                            app_proto=self._session(flow).event_app_proto(), direction=self._direction(flow))
        event.update(self._session(flow).event_fields())     # tls.sni, http.hostname: where it went
        event["geo"] = geo
        event["transfer"] = transfer.event_fields()
        alert = event["alert"]
        if transfer.status == "denied":
            alert["severity"] = SEVERITY_HIGH
        elif transfer.status == "expired":
            alert["severity"] = max(SEVERITY_HIGH, alert["severity"] - 1)
        self._emit(event)
        stats = self.stats
        stats.alerts += 1
        severity = SEVERITY_NAMES[alert["severity"]]
        for match in event["classification"]["matches"]:
            stats.alerts_by[match["class"], severity] += 1

    def _transfer(self, flow: Flow) -> Transfer:
        """The register's word on the outside party: by its address and the names DNS answers
        seen on the wire gave that address (before the flow started).

        The name a client claims itself (TLS SNI, HTTP Host) can only make the verdict stricter
        (expired, denied), never cover a transfer: any client can send any name to any
        address, and an upload must not go unalerted because it says it is for a partner.
        Only egress flows have one: on ingress flows it names the inside server."""
        egress = flow.client in self.internal
        outside = flow.server if egress else flow.client
        observed = self.passive_dns.names(outside, flow.start) if self.passive_dns is not None else ()
        transfer = self.register.lookup(outside, observed, flow.start)
        session = flow.consumer
        if egress and isinstance(session, AppSession) and transfer.status != "denied":
            claimed = session.sni or session.http_host
            if claimed:
                by_claim = self.register.lookup(outside, (claimed, *observed), flow.start)
                if _STRICTNESS[by_claim.status] > _STRICTNESS[transfer.status]:
                    transfer = by_claim
        return transfer

    def _finish_flow(self, flow: Flow) -> None:
        session = flow.consumer
        if not isinstance(session, AppSession):
            return                 # not inspected (None), or a DNS flow only feeding passive DNS
        session.finish()
        if session.scanner is not None and session.scanner.seconds:     # type: ignore[attr-defined]
            self.stats.observe_scan(session.scanner.seconds)           # type: ignore[attr-defined]
        findings = flow.user
        assert isinstance(findings, Findings)
        if findings.changed:
            self._maybe_alert(flow, findings)      # values confirmed only at the end of the flow
        app_fields = session.event_fields()
        egress = flow.client in self.internal
        direction = "egress" if egress else "ingress"
        geo = app_fields["geo"] = self._geo_fields(flow, egress)
        if geo["cross_border"] is not False:
            app_fields["transfer"] = self._transfer(flow).event_fields()
        if findings:
            app_fields["classification"] = findings.event_fields()
        self._emit(flow_event(flow, pcap_filename=self.source_names[flow.source],
                              app_proto=session.event_app_proto(), app_fields=app_fields,
                              direction=direction))
        stats = self.stats
        stats.flow_events += 1
        crossing = geo["cross_border"]
        if crossing is not False:
            stats.transfers[app_fields["transfer"]["status"]] += 1
        stats.flows_ended["unknown" if crossing is None else "true" if crossing else "false"] += 1
        jurisdiction = geo["dest_jurisdiction" if egress else "src_jurisdiction"]
        # What the inside party sent: the client's bytes on egress, the server's on ingress.
        stats.egress_bytes[jurisdiction, direction] += flow.bytes[TOSERVER if egress else TOCLIENT]
        for class_id in findings.by_class:
            stats.classified[class_id, jurisdiction] += findings.count(class_id)
        if findings and crossing is not False:
            stats.ledger.record(counting_year(flow.start, self.jurisdiction.counting_timezone), findings)
        if findings:
            stats.flows_by_severity[SEVERITY_NAMES[findings.severity()]] += 1
        findings.release()                         # its digests leave the process-wide budget

    def _geo_fields(self, flow: Flow, egress: bool | None = None) -> dict[str, Any]:
        """Where the outside party is: `dest_*` for egress flows, `src_*` for ingress flows."""
        if egress is None:
            egress = flow.client in self.internal
        place = self.geo.lookup(flow.server if egress else flow.client)
        country = place.country
        jurisdiction = self.jurisdiction
        if egress:
            return {"dest_country": country, "dest_jurisdiction": jurisdiction.of(country),
                    "cross_border": jurisdiction.cross_border(country), "asn": place.asn, "as_org": place.as_org}
        return {"src_country": country, "src_jurisdiction": jurisdiction.of(country),
                "cross_border": jurisdiction.cross_border(country), "asn": place.asn, "as_org": place.as_org}

    def _direction(self, flow: Flow) -> str:
        return "egress" if flow.client in self.internal else "ingress"

    @staticmethod
    def _session(flow: Flow) -> AppSession:
        assert isinstance(flow.consumer, AppSession)
        return flow.consumer

    def _emit(self, event: dict[str, Any]) -> None:
        if self.shard is not None:
            self._emitted += 1
            key = self.emit_key + (self._emitted,)
            for exporter in self.exporters:
                exporter.emit_keyed(key, event)       # type: ignore[attr-defined]
            return
        for exporter in self.exporters:
            exporter.emit(event)

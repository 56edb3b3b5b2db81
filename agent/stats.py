"""Run-wide counters: plain ints and Counters, merged across workers and read by exporters.

Anomaly names are dotted, like Zeek's weirds: `decode.ipv4_bad_ihl`, `tcp.overlap_conflict`,
`limit.reasm_memcap`. Nothing here locks or allocates per packet beyond a dict increment;
the metrics endpoint and the summary line read these at scrape/summary time. Labelled
counters are keyed by tuples of bounded values only (class ids, jurisdictions, directions,
severities) — never addresses or names.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from geo.ledger import TransferLedger

SEVERITY_NAMES = {1: "high", 2: "medium", 3: "low"}   # EVE alert severity -> metric label

# Upper bounds (seconds) of the scan duration histogram buckets; +Inf is implied.
SCAN_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


@dataclass(slots=True)
class Stats:
    packets: int = 0            # frames read from the capture source
    bytes: int = 0              # captured bytes of those frames
    flows: int = 0              # flows created
    flow_events: int = 0        # flow events emitted (boundary-crossing flows only)
    alerts: int = 0             # alert events emitted (at most one per flow)
    icmp: int = 0               # ICMP/ICMPv6 packets: counted, not tracked as flows
    other_ip: int = 0           # IP packets of other protocols (not tracked)
    anomalies: Counter[str] = field(default_factory=Counter)
    flows_ended: Counter[str] = field(default_factory=Counter)                 # by cross_border
    egress_bytes: Counter[tuple[str, str]] = field(default_factory=Counter)   # (jurisdiction, direction)
    classified: Counter[tuple[str, str]] = field(default_factory=Counter)     # (class, jurisdiction)
    rejected: Counter[str] = field(default_factory=Counter)                   # validator rejects by class
    alerts_by: Counter[tuple[str, str]] = field(default_factory=Counter)      # (class, severity)
    flows_by_severity: Counter[str] = field(default_factory=Counter)          # classified flows, final severity
    transfers: Counter[str] = field(default_factory=Counter)                  # register status
    ledger: TransferLedger = field(default_factory=TransferLedger)            # the year's cross-border volume
    # Timings: not part of equality (two runs of the same input count the same, not time the same).
    scan_buckets: list[int] = field(default_factory=lambda: [0] * (len(SCAN_BUCKETS) + 1), compare=False)
    scan_seconds: float = field(default=0.0, compare=False)

    def observe_scan(self, seconds: float) -> None:
        self.scan_buckets[bisect.bisect_left(SCAN_BUCKETS, seconds)] += 1
        self.scan_seconds += seconds

    def merge(self, other: Stats) -> None:
        self.packets += other.packets
        self.bytes += other.bytes
        self.flows += other.flows
        self.flow_events += other.flow_events
        self.alerts += other.alerts
        self.icmp += other.icmp
        self.other_ip += other.other_ip
        self.anomalies.update(other.anomalies)
        self.flows_ended.update(other.flows_ended)
        self.egress_bytes.update(other.egress_bytes)
        self.classified.update(other.classified)
        self.rejected.update(other.rejected)
        self.alerts_by.update(other.alerts_by)
        self.flows_by_severity.update(other.flows_by_severity)
        self.transfers.update(other.transfers)
        self.ledger.merge(other.ledger)
        self.scan_buckets = [a + b for a, b in zip(self.scan_buckets, other.scan_buckets)]
        self.scan_seconds += other.scan_seconds

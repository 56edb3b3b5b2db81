"""Run-wide counters: plain ints and one Counter of named anomalies.

Anomaly names are dotted, like Zeek's weirds: `decode.ipv4_bad_ihl`, `tcp.overlap_conflict`,
`limit.reasm_memcap`. Nothing here locks or allocates per packet beyond a dict increment;
exporters read these at scrape/summary time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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

    def merge(self, other: Stats) -> None:
        self.packets += other.packets
        self.bytes += other.bytes
        self.flows += other.flows
        self.flow_events += other.flow_events
        self.alerts += other.alerts
        self.icmp += other.icmp
        self.other_ip += other.other_ip
        self.anomalies.update(other.anomalies)

"""dpkt + per-packet Hyperscan, no reassembly: dpkt parses every frame (Ethernet, IPv4/IPv6,
TCP/UDP); each non-empty payload is scanned alone in Hyperscan block mode with the same rules
as egresswatch. A packet with candidates is then confirmed by egresswatch's own engine
(boundaries, hotwords, validators) on that packet's payload alone, so the differences from
egresswatch in recall are what per-packet matching misses: values split across segments or
chunks, gzip and GBK bodies. No flow direction: values in domestic and inbound flows are
reported too. Timed: the whole loop (read, parse, scan, confirm)."""

from __future__ import annotations

import ipaddress
import time

import dpkt

from benchmarks.peers import EDGE, Job, block_database, frames, load_rules
from classifiers.engine import Engine


def run(job: Job) -> dict:
    rules = load_rules(job.rule_packs)
    database = block_database(rules)
    engine = Engine(rules)
    candidates: list[int] = []
    found: dict[tuple[bytes, int, bytes, int], dict[str, set[str]]] = {}
    flow_values: dict[str, set[str]] = {}

    def on_match(rule: int, start: int, end: int, flags: int, context: object) -> None:
        candidates.append(rule)

    def on_value(class_id: str, value: str, confidence: str) -> None:
        flow_values.setdefault(class_id, set()).add(value)

    hits = packets = nbytes = 0
    ip_types = (dpkt.ip.IP, dpkt.ip6.IP6)
    l4_types = (dpkt.tcp.TCP, dpkt.udp.UDP)
    started = time.perf_counter()
    for frame in frames(job.capture, job.slice_packets):
        packets += 1
        nbytes += len(frame)
        ip = dpkt.ethernet.Ethernet(frame).data
        if not isinstance(ip, ip_types):
            continue
        l4 = ip.data
        if not isinstance(l4, l4_types) or not l4.data:
            continue
        payload = bytes(l4.data)
        database.scan(EDGE + payload, match_event_handler=on_match)
        if candidates:
            hits += len(candidates)
            candidates.clear()
            flow_values = found.setdefault((ip.src, l4.sport, ip.dst, l4.dport), {})
            engine.scan_bytes(payload, on_value)
    seconds = time.perf_counter() - started
    rows = [[str(ipaddress.ip_address(src)), sport, str(ipaddress.ip_address(dst)), dport,
             {cls: len(values) for cls, values in per_class.items()}]
            for (src, sport, dst, dport), per_class in found.items() if per_class]
    return {"packets": packets, "bytes": nbytes, "seconds": seconds, "hits": hits, "found": rows,
            "timed": "read + parse + scan + confirm"}

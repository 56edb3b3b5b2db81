"""scapy + re: scapy's PcapReader dissects each packet; Python `re` (the rules translated, one
`finditer` per rule) runs over each TCP/UDP payload. Only the first `slice_packets` packets are
processed (the whole 300 MB capture would take hours); the rate is extrapolated from them.
Timed: the loop (read, dissect, match)."""

from __future__ import annotations

import time

from benchmarks.peers import Job, count_matches, load_rules, python_regexes


def run(job: Job) -> dict:
    from scapy.layers.inet import TCP, UDP
    from scapy.utils import PcapReader

    patterns, untranslated = python_regexes(load_rules(job.rule_packs))
    hits = packets = nbytes = 0
    started = time.perf_counter()
    with PcapReader(job.capture) as reader:
        for packet in reader:
            packets += 1
            nbytes += len(packet)
            layer = packet.getlayer(TCP) or packet.getlayer(UDP)
            if layer is not None:
                payload = bytes(layer.payload)
                if payload:
                    hits += count_matches(patterns, payload)
            if packets == job.slice_packets:
                break
    seconds = time.perf_counter() - started
    note = "not translatable: " + "; ".join(untranslated) if untranslated else ""
    return {"packets": packets, "bytes": nbytes, "seconds": seconds, "hits": hits, "sliced": bool(job.slice_packets),
            "timed": "read + dissect + match", "note": note}

"""pyshark + re: pyshark runs tshark (PDML) over the file and builds a Python object per packet;
Python `re` (the rules translated, one `finditer` per rule) runs over the `tcp.payload` and
`udp.payload` fields (hex text turned back into bytes). tshark dissects DNS, so DNS bytes
are not in `udp.payload` and are not matched. Only the first `slice_packets` packets are
processed; the rate is extrapolated from them. Timed: the loop (tshark + parse + match)."""

from __future__ import annotations

import time

from benchmarks.peers import Job, count_matches, load_rules, python_regexes


def _payload(packet, layer_name: str) -> bytes:
    layer = getattr(packet, layer_name, None)
    field = getattr(layer, "payload", None) if layer is not None else None
    return bytes.fromhex(str(field).replace(":", "")) if field is not None else b""


def run(job: Job) -> dict:
    import pyshark

    patterns, untranslated = python_regexes(load_rules(job.rule_packs))
    hits = packets = nbytes = 0
    started = time.perf_counter()
    capture = pyshark.FileCapture(job.capture, keep_packets=False)
    try:
        for packet in capture:
            packets += 1
            nbytes += int(packet.captured_length)
            payload = _payload(packet, "tcp") or _payload(packet, "udp")
            if payload:
                hits += count_matches(patterns, payload)
            if packets == job.slice_packets:
                break
    finally:
        capture.close()
    seconds = time.perf_counter() - started
    note = "not translatable: " + "; ".join(untranslated) if untranslated else ""
    return {"packets": packets, "bytes": nbytes, "seconds": seconds, "hits": hits, "sliced": bool(job.slice_packets),
            "timed": "tshark + parse + match", "note": note}

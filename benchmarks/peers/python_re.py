"""re: Python's `re` over the same one buffer of all TCP/UDP payloads as hyperscan-limit, one
`finditer` pass per rule (the usual way to apply a list of regexes). Only the scans are timed."""

from __future__ import annotations

import time

from benchmarks.peers import Job, count_matches, load_rules, payload_buffer, python_regexes


def run(job: Job) -> dict:
    rules = load_rules(job.rule_packs)
    patterns, untranslated = python_regexes(rules)
    buffer, packets, nbytes = payload_buffer(job.capture)
    data = bytes(buffer)
    del buffer
    started = time.perf_counter()
    hits = count_matches(patterns, data)
    seconds = time.perf_counter() - started
    note = f"{len(patterns)} of {len(rules)} patterns translated unchanged"
    if untranslated:
        note += "; not translatable: " + "; ".join(untranslated)
    return {"packets": packets, "bytes": nbytes, "seconds": seconds, "hits": hits, "timed": "scans only",
            "note": note}

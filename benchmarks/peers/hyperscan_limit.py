"""hyperscan-limit: the upper bound. Hyperscan block mode over all TCP/UDP payloads of the
capture concatenated in one buffer, with exactly the expressions egresswatch compiles (built-in
personal-data patterns + rule packs; fenced, same flags: `classifiers.engine.expressions`). Only the scan is timed, and the timed scan has no match
handler (Hyperscan still finds every match, but no Python runs per match): no parsing, no
flows, no confirmation. The hits come from a second, untimed scan that counts them.

For the record (not the limit), the same scan is also timed with the patterns as written, every
one with SOM_LEFTMOST and none fenced: the formulation the issue's limit was measured with."""

from __future__ import annotations

import time

from benchmarks.peers import EDGE, Job, block_database, load_rules, payload_buffer


def _scan_seconds(database, buffer: bytearray) -> float:
    started = time.perf_counter()
    database.scan(buffer)
    return time.perf_counter() - started


def run(job: Job) -> dict:
    rules = load_rules(job.rule_packs)
    database = block_database(rules)
    buffer, packets, nbytes = payload_buffer(job.capture)
    buffer[:0] = EDGE
    seconds = _scan_seconds(database, buffer)
    hits = 0

    def on_match(rule: int, start: int, end: int, flags: int, context: object) -> None:
        nonlocal hits
        hits += 1

    database.scan(buffer, match_event_handler=on_match)
    del database
    as_written = _scan_seconds(block_database(rules, as_written=True), buffer)
    return {"packets": packets, "bytes": nbytes, "seconds": seconds, "hits": hits, "timed": "scan only",
            "as_written_seconds": as_written,
            "note": f"{len(rules)} patterns; {len(buffer) / 1e6:.1f} MB of payload in one buffer; "
                    f"patterns as written, all SOM_LEFTMOST: {nbytes * 8 / 1e6 / as_written:,.0f} Mbit/s"}

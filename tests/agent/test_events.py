"""EVE event helpers: exact timestamps (cached per second), one shared JSON encoder, flow ids."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

from agent.events import dumps, format_ts
from agent.flows import Flow


def reference_ts(us: int) -> str:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    try:
        moment = epoch + timedelta(microseconds=us)
    except OverflowError:
        moment = datetime.max.replace(tzinfo=timezone.utc) if us > 0 else datetime.min.replace(tzinfo=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def test_format_ts_is_exact_across_seconds_signs_and_the_clamped_range():
    edges = [0, 1, -1, 999_999, 1_000_000, -1_000_000, -1_000_001, 1_767_225_600_000_000,
             253_402_300_799_999_999, 253_402_300_800_000_000, -62_135_596_800_000_000,
             -62_135_596_800_000_001, 2**63, -2**63]
    rng = random.Random(5)
    values = edges + [rng.randint(-2**63, 2**63) for _ in range(3000)]
    # Many values within one second: the cached part must not leak between microseconds.
    values += [1_767_225_600_000_000 + rng.randint(0, 5_000_000) for _ in range(3000)]
    for us in values:
        assert format_ts(us) == reference_ts(us), us


def test_dumps_is_json_dumps_compact_and_unescaped():
    event = {"timestamp": "2026-01-01T00:00:00.000001+0000", "flow_id": 2**51 - 1, "src_ip": "10.0.0.1",
             "tls": {"sni": "例子.测试"}, "matches": [{"count": 3, "samples": ["138****5678"]}], "ok": True,
             "none": None}
    assert dumps(event) == json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(dumps(event)) == event
    controls = {"k": "a\x00b\x7f\u2028\"\\", 7: 1.5}         # escapes, a non-string key, a float
    assert dumps(controls) == json.dumps(controls, ensure_ascii=False, separators=(",", ":"))


def test_dumps_keeps_an_event_with_a_string_that_is_not_unicode():
    # `replay` of a capture whose file name is not UTF-8: the name arrives with surrogate escapes.
    event = {"pcap_filename": "/captures/\udcff\udcfe.pcap", "flow_id": 1}
    line = dumps(event)
    assert json.loads(line) == event and line.isascii()


def test_flow_id_is_computed_once_and_equals_a_fresh_flow():
    flow = Flow(b"k", 6, 0, b"\x0a\x00\x00\x01", 40000, b"\x05\x09\x00\x01", 443, 1_767_225_600_000_000, 0)
    first = flow.flow_id
    flow.pkts[0] += 5                      # counters and times change; the id must not
    flow.last += 10_000_000
    twin = Flow(b"other", 6, 0, b"\x0a\x00\x00\x01", 40000, b"\x05\x09\x00\x01", 443, 1_767_225_600_000_000, 3)
    assert flow.flow_id == first == twin.flow_id
    other = Flow(b"k", 6, 0, b"\x0a\x00\x00\x01", 40001, b"\x05\x09\x00\x01", 443, 1_767_225_600_000_000, 0)
    assert other.flow_id != first

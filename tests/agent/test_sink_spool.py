"""The on-disk spool under the network sinks: order, restart, overflow, torn records; and the rate limit."""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import msgpack
import pytest

from agent.decode import PROTO_TCP
from agent.errors import UsageError
from agent.events import alert_event
from agent.exporters.ratelimit import FlowRateLimiter
from agent.exporters.spool import HEADER, MAGIC, MIN_LIMIT_BYTES, Spool, backoff_delay
from agent.flows import Flow
from tests.streams import PROJECT_ROOT

T0_US = 1_767_225_600_000_000


def alert_events(count: int, *, severity: int = 2, first_port: int = 20_000) -> list[dict]:
    """Alert events as the pipeline builds them (agent.events.alert_event), one flow each, values masked."""
    inside = socket.inet_pton(socket.AF_INET, "10.0.29.73")
    outside = socket.inet_pton(socket.AF_INET, "142.251.29.74")
    events = []
    for i in range(count):
        port = first_port + i % 40_000
        flow = Flow(b"k%d" % i, PROTO_TCP, 0, inside, port, outside, 80, T0_US + i * 1_000, 0)
        flow.last = flow.start + 62_000
        flow.pkts = [3, 1]
        flow.bytes = [756 + i, 74]
        classification = {"severity": severity, "matches": [
            {"class": "cn_resident_id", "category": "identity", "sensitive": True, "count": 1 + i % 3,
             "samples": ["110101********625X"]},
            {"class": "email", "category": "contact", "sensitive": False, "count": 1, "samples": ["m***@example.cn"]},
        ]}
        event = alert_event(flow, classification, pcap_filename=None, app_proto="http", direction="egress")
        event["geo"] = {"dest_country": "US", "dest_jurisdiction": "US", "cross_border": True,
                        "asn": 15169, "as_org": "Google LLC" if i % 2 else "中国联通 (UTF-8 check)"}
        events.append(event)
    return events


def read_all(spool: Spool, *, commit: bool = True, max_records: int = 64) -> list:
    """Everything from the head, a batch at a time (bounded by the spool's depth)."""
    out, cursor = [], None
    for _ in range(spool.depth + 2):
        batch = spool.read(cursor, max_records=max_records)
        if not batch:
            break
        out.extend(record for record, _ in batch)
        cursor = batch[-1][1]
        if commit:
            spool.commit(cursor)
    return out


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def frames_on_disk(directory: Path) -> list:
    """Decode the segment files without the Spool class: the format the module docstring promises."""
    records = []
    for path in segment_files(directory):
        data = path.read_bytes()
        assert data[:HEADER] == MAGIC
        pos = HEADER
        while pos < len(data):
            length, crc = struct.unpack_from("<II", data, pos)
            payload = data[pos + 8:pos + 8 + length]
            assert zlib.crc32(payload) == crc
            records.append(msgpack.unpackb(payload))
            pos += 8 + length
    return records


def write_spool(directory, events) -> None:
    """A closed spool (1 MiB limit) in `directory` holding `events`."""
    spool = Spool(str(directory), 1 << 20)
    for event in events:
        spool.append(event)
    spool.close()

def test_records_come_back_in_order_and_leave_only_when_committed(tmp_path):
    events = alert_events(50)
    spool = Spool(str(tmp_path), 1 << 20)
    for event in events:
        assert spool.append(event)
    assert spool.depth == 50
    assert read_all(spool, commit=False) == events
    assert spool.depth == 50                       # reading alone delivers nothing
    assert read_all(spool) == events
    assert spool.depth == 0
    assert spool.read() == []
    spool.close()


def test_the_spool_holds_exactly_the_events_given(tmp_path):
    events = alert_events(30)
    write_spool(tmp_path, events)
    assert frames_on_disk(tmp_path) == events
    raw = b"".join(path.read_bytes() for path in segment_files(tmp_path))
    assert "110101********625X".encode() in raw    # the masked sample the event carries, as given


def test_restart_resumes_after_the_last_commit(tmp_path):
    events = alert_events(120)
    spool = Spool(str(tmp_path), 1 << 20)
    for event in events[:100]:
        spool.append(event)
    batch = spool.read(max_records=40)
    spool.commit(batch[-1][1])
    spool.close()

    spool = Spool(str(tmp_path), 1 << 20)
    assert spool.depth == 60
    for event in events[100:]:
        spool.append(event)
    assert read_all(spool) == events[40:]
    spool.close()
    assert Spool(str(tmp_path), 1 << 20).depth == 0


def test_records_read_but_not_committed_are_replayed_after_restart(tmp_path):
    events = alert_events(20)
    spool = Spool(str(tmp_path), 1 << 20)
    for event in events:
        spool.append(event)
    spool.commit(spool.read(max_records=5)[-1][1])
    assert len(spool.read(spool.head, max_records=10)) == 10      # sent, never confirmed
    spool.close()
    assert read_all(Spool(str(tmp_path), 1 << 20)) == events[5:]


def test_restart_resumes_across_many_segments(tmp_path):
    events = alert_events(400)
    spool = Spool(str(tmp_path), 1 << 20, segment_bytes=8 << 10)
    for event in events:
        spool.append(event)
    assert len(segment_files(tmp_path)) > 10
    taken = []
    for _ in range(7):                             # commit part way into a middle segment
        batch = spool.read(max_records=23)
        taken.extend(record for record, _ in batch)
        spool.commit(batch[-1][1])
    spool.close()
    again = Spool(str(tmp_path), 1 << 20, segment_bytes=8 << 10)
    assert taken + read_all(again) == events
    assert len(segment_files(tmp_path)) == 1       # delivered segments are removed; the last one is kept for appends


def test_overflow_drops_the_oldest_records_and_counts_them(tmp_path):
    events = alert_events(600)
    spool = Spool(str(tmp_path), MIN_LIMIT_BYTES)
    for event in events:
        assert spool.append(event)
        assert spool.bytes <= MIN_LIMIT_BYTES
        assert sum(path.stat().st_size for path in segment_files(tmp_path)) == spool.bytes
    kept = read_all(spool)
    assert 0 < len(kept) < len(events)
    assert spool.dropped == len(events) - len(kept)
    assert kept == events[-len(kept):]             # the newest survive, in order, without holes
    spool.close()


def test_overflow_counts_only_undelivered_records(tmp_path):
    events = alert_events(600)
    spool = Spool(str(tmp_path), MIN_LIMIT_BYTES)
    delivered = 0
    for i, event in enumerate(events):
        spool.append(event)
        if i % 3 == 0:                             # a slow receiver: one in three taken
            batch = spool.read(max_records=1)
            spool.commit(batch[0][1])
            delivered += 1
    left = read_all(spool)
    assert delivered + spool.dropped + len(left) == len(events)
    assert spool.dropped > 0
    spool.close()


def test_a_record_larger_than_the_limit_is_dropped_and_counted(tmp_path):
    spool = Spool(str(tmp_path), MIN_LIMIT_BYTES)
    assert not spool.append({"event_type": "alert", "blob": "x" * MIN_LIMIT_BYTES})
    assert spool.dropped == 1 and spool.depth == 0
    assert spool.append(alert_events(1)[0])
    spool.close()


def test_a_torn_last_record_is_cut_and_counted(tmp_path):
    events = alert_events(20)
    write_spool(tmp_path, events)
    last = segment_files(tmp_path)[-1]
    size = last.stat().st_size
    os.truncate(last, size - 7)                    # the crash came in the middle of the last write

    spool = Spool(str(tmp_path), 1 << 20)
    assert spool.torn == 1 and spool.dropped == 1
    assert spool.depth == 19
    assert last.stat().st_size < size - 7          # the partial frame is cut off the file
    for event in alert_events(3, first_port=50_000):
        spool.append(event)
    assert read_all(spool) == events[:19] + alert_events(3, first_port=50_000)
    spool.close()


# A writer that prints each index once append() has returned, until it is killed (or 200,000 records).
_WRITER = """
import sys
from agent.exporters.spool import Spool
spool = Spool(sys.argv[1], 64 << 20)
for i in range(200_000):
    spool.append({"event_type": "alert", "n": i, "pad": "x" * (i % 500)})
    print(i, flush=True)
"""


def test_a_killed_writer_loses_nothing_append_returned(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, text=True)
    last = -1
    deadline = time.monotonic() + 60
    while last < 2000 and time.monotonic() < deadline:
        last = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)               # no close(), no flush of anything in Python
    writer.wait(60)
    writer.stdout.close()
    assert last >= 2000
    spool = Spool(str(tmp_path), 64 << 20)
    numbers = [record["n"] for record in read_all(spool, max_records=500)]
    assert numbers == list(range(len(numbers)))      # in order, no holes
    assert len(numbers) > last                       # everything append() had returned for is there
    assert spool.torn <= 1                           # at most the write the kill interrupted
    spool.close()


@pytest.mark.parametrize("tail", [b"\0" * 4096, b"\x93\x01\x02\x03garbage", struct.pack("<II", 50, 0) + b"short"],
                         ids=["zero-filled", "garbage", "length-beyond-end"])
def test_a_damaged_tail_is_skipped_not_read_as_records(tmp_path, tail):
    events = alert_events(10)
    write_spool(tmp_path, events)
    with open(segment_files(tmp_path)[-1], "ab") as out:
        out.write(tail)
    spool = Spool(str(tmp_path), 1 << 20)
    assert spool.torn == 1
    assert read_all(spool) == events
    spool.close()


def test_damage_found_while_reading_ends_only_that_segment(tmp_path):
    events = alert_events(200)
    spool = Spool(str(tmp_path), 1 << 20, segment_bytes=8 << 10)
    for event in events:
        spool.append(event)
    first = segment_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[HEADER + 8 + 5] ^= 0xFF                  # flip a byte inside the first record's payload
    first.write_bytes(bytes(data))
    rest = read_all(spool)
    assert spool.torn == 1
    in_first = len(events) - len(rest)
    assert in_first > 0 and spool.dropped == in_first
    assert rest == events[in_first:]
    spool.close()


def test_a_cut_short_new_segment_is_reused(tmp_path):
    (tmp_path / f"{1:020d}.seg").write_bytes(MAGIC[:3])      # created, then the crash
    spool = Spool(str(tmp_path), 1 << 20)
    assert spool.torn == 0 and spool.depth == 0
    events = alert_events(2)
    for event in events:
        spool.append(event)
    assert read_all(spool) == events
    spool.close()


def test_bad_spool_directories_are_usage_errors(tmp_path):
    (tmp_path / f"{1:020d}.seg").write_text("not ours, a file somebody left here\n")
    with pytest.raises(UsageError, match="not an egresswatch spool segment"):
        Spool(str(tmp_path), 1 << 20)
    plain = tmp_path / "plain-file"
    plain.write_text("x")
    with pytest.raises(UsageError, match="cannot use spool directory"):
        Spool(str(plain / "spool"), 1 << 20)
    with pytest.raises(UsageError, match="spool limit"):
        Spool(str(tmp_path / "small"), 1000)


def test_a_spool_directory_has_one_user_at_a_time(tmp_path):
    first = Spool(str(tmp_path), 1 << 20)
    with pytest.raises(UsageError, match="in use"):
        Spool(str(tmp_path), 1 << 20)
    first.close()
    Spool(str(tmp_path), 1 << 20).close()


def test_concurrent_appends_and_commits_keep_every_record_once_in_order(tmp_path):
    total = 3000
    spool = Spool(str(tmp_path), 4 << 20, segment_bytes=64 << 10)

    def produce() -> None:
        for i in range(total):
            spool.append({"event_type": "alert", "n": i, "pad": "x" * (i % 300)})

    producer = threading.Thread(target=produce)
    producer.start()
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while len(seen) < total and time.monotonic() < deadline:
        batch = spool.read(max_records=97)
        if not batch:
            time.sleep(0.001)
            continue
        seen.extend(record["n"] for record, _ in batch)
        spool.commit(batch[-1][1])
    producer.join(60)
    assert seen == list(range(total))
    assert spool.depth == 0 and spool.dropped == 0 and spool.torn == 0
    spool.close()


def test_rate_limit_per_flow_and_event_type_with_counted_suppression():
    now = [100.0]
    limiter = FlowRateLimiter(3, 60.0, clock=lambda: now[0])
    allowed = [limiter.allow(7, "alert") for _ in range(10)]
    assert allowed == [True] * 3 + [False] * 7
    assert limiter.suppressed == 7
    assert limiter.allow(7, "flow") and limiter.allow(8, "alert")   # other type, other flow: own budgets
    assert limiter.allow(None, "stats")                              # no flow: not limited
    now[0] += 60.0
    assert [limiter.allow(7, "alert") for _ in range(4)] == [True] * 3 + [False]
    assert limiter.suppressed == 8


def test_rate_limit_memory_is_bounded():
    now = [0.0]
    limiter = FlowRateLimiter(1, 10.0, max_keys=100, clock=lambda: now[0])
    for flow_id in range(1000):
        limiter.allow(flow_id, "alert")
    assert len(limiter) == 100
    now[0] = 25.0
    limiter.allow("late", "alert")                # the sweep forgets ended windows
    assert len(limiter) == 1


def test_backoff_grows_exponentially_with_bounded_jitter():
    rng = random.Random(5)
    for failures in range(1, 12):
        step = min(30.0, 0.5 * 2 ** (failures - 1))
        delays = [backoff_delay(failures, 0.5, 30.0, rng) for _ in range(50)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 1                # jittered, not one fixed value

"""TCP stream reassembly: one `TcpStream` per flow direction delivering in-order bytes.

Policies (each counted in `anomalies` when it applies):
- Overlaps: **first wins**. Bytes already delivered or already queued are kept; a later
  segment only fills holes (`tcp.overlap`; `tcp.overlap_conflict` when the bytes differ,
  which is checked against queued data and against the most recently delivered segment).
- Gaps: never silently joined. When the out-of-order queue exceeds its per-stream limit or
  the global memcap, or when the stream ends with data still queued, the consumer gets
  `gap(direction, nbytes)` and delivery resumes after the hole (`tcp.gap`, bytes in
  `tcp.gap_bytes`). Snaplen-truncated segments deliver what was captured, then a gap.
- Missing SYN: the first segment seen sets the initial sequence number (mid-stream pickup,
  `tcp.midstream`). SYN payload (TCP Fast Open) is stream data after the SYN's sequence.
- Urgent data stays inline (as the Linux stack with `tcp_stdurg` off, and tshark, present
  it to a reader of the capture); counted as `tcp.urgent`.
- Sequence wraparound: all comparisons are modulo 2**32; positions are kept as 64-bit
  stream offsets internally.
- Depth: after `depth` bytes a direction stops delivering (`limit.stream_depth`); 0 means
  no limit.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

TOSERVER = 0
TOCLIENT = 1

_SEQ_MOD = 1 << 32
_HALF = 1 << 31
_WINDOW = 1 << 30        # a segment further than this from the expected sequence is not ours


class StreamConsumer(Protocol):
    """Receives each direction's reassembled bytes, in order, with explicit gaps."""

    def data(self, direction: int, data: memoryview | bytes) -> None: ...
    def gap(self, direction: int, nbytes: int) -> None: ...
    def end(self, direction: int) -> None: ...


class ReassemblyBudget:
    """Global out-of-order memory accounting shared by every stream of one flow table."""

    __slots__ = ("memcap", "used", "peak")

    def __init__(self, memcap: int) -> None:
        self.memcap = memcap
        self.used = 0
        self.peak = 0


class TcpStream:
    """In-order delivery of one direction of a TCP connection."""

    __slots__ = ("direction", "consumer", "anomalies", "budget", "max_queued", "depth",
                 "started", "next_seq", "offset", "queue", "queued", "last", "last_offset",
                 "fin_offset", "ended", "stopped")

    def __init__(self, direction: int, consumer: StreamConsumer, anomalies: Counter[str],
                 budget: ReassemblyBudget, max_queued: int, depth: int) -> None:
        self.direction = direction
        self.consumer = consumer
        self.anomalies = anomalies
        self.budget = budget
        self.max_queued = max_queued       # per-stream out-of-order bytes before we give up and gap
        self.depth = depth                 # stop delivering after this many bytes (0: no limit)
        self.started = False
        self.next_seq = 0                  # sequence number of the next byte to deliver (mod 2**32)
        self.offset = 0                    # stream offset of that byte (64-bit, counts gaps too)
        self.queue: dict[int, bytes] = {}  # stream offset -> bytes, non-overlapping
        self.queued = 0
        self.last: memoryview | bytes = b""  # the most recently delivered segment, to check retransmissions
        self.last_offset = 0
        self.fin_offset = -1
        self.ended = False
        self.stopped = False               # depth reached or flow ended: ignore further data

    def syn(self, seq: int) -> None:
        """A SYN from this direction fixes the initial sequence number."""
        if not self.started:
            self.started = True
            self.next_seq = (seq + 1) % _SEQ_MOD

    def segment(self, seq: int, payload: memoryview | bytes, fin: bool, urg: bool, truncated: bool,
                syn: bool) -> None:
        """Add one segment (its payload may be empty); delivers whatever became in-order."""
        if self.stopped:
            return
        n = len(payload)
        if syn:
            seq = (seq + 1) % _SEQ_MOD            # the SYN occupies one sequence number
        if not self.started:
            self.started = True
            self.next_seq = seq
            self.anomalies["tcp.midstream"] += 1
        if urg:
            self.anomalies["tcp.urgent"] += 1
        rel = (seq - self.next_seq) % _SEQ_MOD
        if rel >= _HALF:
            rel -= _SEQ_MOD
        if rel > _WINDOW or rel < -_WINDOW:
            self.anomalies["tcp.seq_out_of_window"] += 1
            return
        if fin and self.fin_offset < 0:
            self.fin_offset = self.offset + rel + n
        elif n and 0 <= self.fin_offset < self.offset + rel + n:
            # Kept, not dropped: a forged FIN must not blind us to what follows it.
            self.anomalies["tcp.data_after_fin"] += 1
        if n:
            if rel == 0 and not self.queue:
                self._deliver(payload)
            elif rel <= 0:
                self._overlap_delivered(rel, payload)
            else:
                self._enqueue(self.offset + rel, payload)
            if truncated:
                # The capture lost the tail of this segment; mark the hole explicitly when we reach it.
                self.anomalies["tcp.truncated_segment"] += 1

    def flush(self) -> None:
        """Deliver everything queued, with explicit gaps for the holes (RST, queue limits)."""
        while self.queue and not self.stopped:
            first = min(self.queue)
            if first > self.offset:
                self._gap(first - self.offset)
            self._drain()

    def finish(self) -> None:
        """End of this direction when its flow ends: flush around holes, then tell the consumer."""
        if self.ended:
            return
        self.flush()
        self.abandon()

    def abandon(self) -> None:
        """The flow is no longer reassembled (bypassed): drop what is queued, end this direction."""
        if self.ended:
            return
        self._release_queue()
        self.ended = True
        self.stopped = True
        self.consumer.end(self.direction)

    # -- internals ---------------------------------------------------------------------------

    def _deliver(self, data: memoryview | bytes) -> None:
        n = len(data)
        if self.depth and self.offset + n > self.depth:
            keep = self.depth - self.offset
            if keep > 0:
                self.consumer.data(self.direction, data[:keep])
            self.anomalies["limit.stream_depth"] += 1
            self.offset += n
            self.next_seq = (self.next_seq + n) % _SEQ_MOD
            self.stopped = True
            self._release_queue()
            return
        self.consumer.data(self.direction, data)
        self.last = data
        self.last_offset = self.offset
        self.offset += n
        self.next_seq = (self.next_seq + n) % _SEQ_MOD

    def _gap(self, nbytes: int) -> None:
        self.anomalies["tcp.gap"] += 1
        self.anomalies["tcp.gap_bytes"] += nbytes
        self.consumer.gap(self.direction, nbytes)
        self.last = b""
        self.offset += nbytes
        self.next_seq = (self.next_seq + nbytes) % _SEQ_MOD

    def _overlap_delivered(self, rel: int, payload: memoryview | bytes) -> None:
        """A segment starting at or before the delivery point: retransmission and/or new data."""
        n = len(payload)
        old = min(-rel, n)
        if old:
            self.anomalies["tcp.overlap" if old < n else "tcp.retransmission"] += 1
            start = self.offset + rel
            last_lo = self.last_offset
            last_hi = last_lo + len(self.last)
            lo, hi = max(start, last_lo), min(start + old, last_hi)
            if lo < hi and self.last[lo - last_lo:hi - last_lo] != payload[lo - start:hi - start]:
                self.anomalies["tcp.overlap_conflict"] += 1
        if old < n:
            fresh = payload[old:]
            if self.queue:
                self._enqueue(self.offset, fresh)
            else:
                self._deliver(fresh)

    def _enqueue(self, at: int, payload: memoryview | bytes) -> None:
        """Queue out-of-order bytes (first wins against what is queued), then drain."""
        data = bytes(payload)             # the capture buffer may be reused: own the bytes
        end = at + len(data)
        pieces = [(at, end)]
        for q_at, q_data in self.queue.items():
            q_end = q_at + len(q_data)
            if q_end <= at or q_at >= end:
                continue
            lo, hi = max(q_at, at), min(q_end, end)
            self.anomalies["tcp.overlap"] += 1
            if q_data[lo - q_at:hi - q_at] != data[lo - at:hi - at]:
                self.anomalies["tcp.overlap_conflict"] += 1
            split = []
            for p_lo, p_hi in pieces:
                if p_hi <= q_at or p_lo >= q_end:
                    split.append((p_lo, p_hi))
                    continue
                if p_lo < q_at:
                    split.append((p_lo, q_at))
                if p_hi > q_end:
                    split.append((q_end, p_hi))
            pieces = split
        budget = self.budget
        for p_lo, p_hi in pieces:
            self.queue[p_lo] = data[p_lo - at:p_hi - at]
            size = p_hi - p_lo
            self.queued += size
            budget.used += size
        if budget.used > budget.peak:
            budget.peak = budget.used
        self._drain()
        if self.queue and (self.queued > self.max_queued or budget.used > budget.memcap):
            self.anomalies["limit.reasm_stream" if self.queued > self.max_queued else "limit.reasm_memcap"] += 1
            self.flush()       # give up waiting for the hole

    def _drain(self) -> None:
        queue = self.queue
        budget = self.budget
        while queue and not self.stopped:
            first = min(queue)
            if first > self.offset:
                return
            data = queue.pop(first)
            self.queued -= len(data)
            budget.used -= len(data)
            skip = self.offset - first
            if skip < len(data):
                self._deliver(memoryview(data)[skip:] if skip else data)

    def _release_queue(self) -> None:
        self.budget.used -= self.queued
        self.queued = 0
        self.queue.clear()

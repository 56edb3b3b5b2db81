"""IPv4 and IPv6 fragment reassembly with hard limits.

Policy for overlapping fragments: **first wins** — bytes already held are kept, the new
fragment only fills holes. Overlaps are counted (`frag.overlap`), and overlaps whose bytes
differ from what is held are counted separately (`frag.overlap_conflict`): that is the
signature of an evasion attempt (RFC 5722 says such IPv6 datagrams must be dropped; we keep
the first copy so the data is still inspected, and make the conflict visible).

Limits (all counted when they bite): concurrent trackers (oldest evicted first), total bytes
held, reassembled datagram size (65,535 for IPv4; 65,535 + header for IPv6 without jumbograms),
fragments per datagram, and a timeout on incomplete datagrams.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

MAX_DATAGRAM = 65535


@dataclass(slots=True)
class _Tracker:
    first_ts: int
    pieces: list[tuple[int, bytes]]     # (offset, data), non-overlapping
    held: int = 0
    total: int = -1                     # known once the last fragment (MF=0) arrived


class Defragmenter:
    """Collects fragments per (version, src, dst, id, proto) and returns whole payloads."""

    def __init__(self, anomalies: Counter[str], *, max_trackers: int = 8192,
                 memcap_bytes: int = 32 << 20, timeout_us: int = 30_000_000,
                 max_fragments: int = 256) -> None:
        self.anomalies = anomalies
        self.max_trackers = max_trackers
        self.memcap_bytes = memcap_bytes
        self.timeout_us = timeout_us
        self.max_fragments = max_fragments
        self.reassembled = 0
        self._held = 0
        self._trackers: dict[tuple[object, ...], _Tracker] = {}
        self._v6_nxt: dict[tuple[object, ...], int] = {}     # next header from each first fragment

    @property
    def memuse(self) -> int:
        return self._held

    def add_v4(self, ts: int, src: bytes, dst: bytes, ident: int, proto: int, offset: int,
               more: bool, payload: memoryview, truncated: bool) -> bytes | None:
        """Add one IPv4 fragment; the whole transport payload once complete, else None."""
        return self._add(ts, (4, src, dst, ident, proto), offset, more, payload, truncated)

    def add_v6(self, ts: int, src: bytes, dst: bytes, ident: int, nxt: int, offset: int,
               more: bool, payload: memoryview, truncated: bool) -> tuple[int, bytes] | None:
        """Add one IPv6 fragment; (next header, fragmentable part) once complete, else None.

        The next-header value of the first fragment (offset 0) is the one that counts; RFC 8200
        lets later fragments carry a different value, which we ignore like the Linux stack.
        """
        key = (6, src, dst, ident)
        whole = self._add(ts, key, offset, more, payload, truncated, nxt)
        if whole is None:
            return None
        return self._v6_nxt.pop(key, nxt), whole

    def _add(self, ts: int, key: tuple[object, ...], offset: int, more: bool, payload: memoryview,
             truncated: bool, v6_nxt: int = -1) -> bytes | None:
        anomalies = self.anomalies
        self._expire(ts)
        if truncated:
            # A snaplen-cut fragment can never be completed correctly; let the tracker time out.
            anomalies["frag.truncated"] += 1
            return None
        n = len(payload)
        end = offset + n
        if end > MAX_DATAGRAM:
            anomalies["frag.too_large"] += 1
            self._drop(key)
            return None
        if more and n % 8:
            anomalies["frag.bad_length"] += 1     # non-final fragments carry multiples of 8 bytes
        tracker = self._trackers.get(key)
        if tracker is None:
            if len(self._trackers) >= self.max_trackers:
                anomalies["limit.frag_trackers"] += 1
                self._drop(next(iter(self._trackers)))
            tracker = self._trackers[key] = _Tracker(ts, [])
        if len(tracker.pieces) >= self.max_fragments:
            anomalies["limit.frag_per_datagram"] += 1
            self._drop(key)
            return None
        if v6_nxt >= 0 and offset == 0:
            self._v6_nxt.setdefault(key, v6_nxt)
        if not more:
            if tracker.total >= 0 and tracker.total != end:
                anomalies["frag.conflicting_end"] += 1
            elif tracker.total < 0:
                tracker.total = end
        added = self._insert_first_wins(tracker, offset, bytes(payload))
        if added:
            if self._held + added > self.memcap_bytes:
                anomalies["limit.frag_memcap"] += 1
                self._drop(key)
                return None
            tracker.held += added
            self._held += added
        if tracker.total < 0:
            return None
        # Complete when the pieces cover [0, total) without a hole.
        tracker.pieces.sort()
        pos = 0
        for off, data in tracker.pieces:
            if off > pos:
                return None
            pos = max(pos, off + len(data))
        if pos < tracker.total:
            return None
        whole = b"".join(data for _, data in tracker.pieces)[:tracker.total]
        self._held -= tracker.held
        del self._trackers[key]
        self.reassembled += 1
        return whole

    def _insert_first_wins(self, tracker: _Tracker, offset: int, data: bytes) -> int:
        """Store only the parts of `data` no earlier fragment covered; return bytes added."""
        end = offset + len(data)
        holes = [(offset, end)]
        for off, held in tracker.pieces:
            held_end = off + len(held)
            if held_end <= offset or off >= end:
                continue
            lo, hi = max(off, offset), min(held_end, end)
            self.anomalies["frag.overlap"] += 1
            if held[lo - off:hi - off] != data[lo - offset:hi - offset]:
                self.anomalies["frag.overlap_conflict"] += 1
            next_holes = []
            for h_lo, h_hi in holes:
                if h_hi <= off or h_lo >= held_end:
                    next_holes.append((h_lo, h_hi))
                    continue
                if h_lo < off:
                    next_holes.append((h_lo, off))
                if h_hi > held_end:
                    next_holes.append((held_end, h_hi))
            holes = next_holes
        added = 0
        for h_lo, h_hi in holes:
            if h_hi > h_lo:
                tracker.pieces.append((h_lo, data[h_lo - offset:h_hi - offset]))
                added += h_hi - h_lo
        if not data:
            tracker.pieces.append((offset, b""))      # an empty last fragment still fixes the end
        return added

    def _drop(self, key: tuple[object, ...]) -> None:
        tracker = self._trackers.pop(key, None)
        if tracker is not None:
            self._held -= tracker.held
        self._v6_nxt.pop(key, None)

    def _expire(self, now: int) -> None:
        # Trackers are in creation order, so the oldest are first.
        trackers = self._trackers
        limit = now - self.timeout_us
        while trackers:
            key = next(iter(trackers))
            if trackers[key].first_ts >= limit:
                break
            self.anomalies["frag.timeout"] += 1
            self._drop(key)

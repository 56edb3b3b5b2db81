"""Per-flow rate limit for network sinks: one noisy flow must not flood a SIEM.

At most `limit` events per (flow_id, event_type) in each fixed window of `window` seconds;
the rest are suppressed and counted (the sink reports the count as `suppressed`). Events
without a flow_id are not limited. Runs on the packet thread, so it is a dict lookup per
event and an occasional sweep, never a lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class FlowRateLimiter:
    """Fixed windows per key, started by the key's first event; memory bounded by `max_keys`."""

    __slots__ = ("limit", "window", "max_keys", "suppressed", "_clock", "_windows", "_next_sweep")

    def __init__(self, limit: int, window: float, *, max_keys: int = 65_536,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("rate limit wants limit >= 1, window > 0 and max_keys >= 1")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.suppressed = 0
        self._clock = clock
        self._windows: dict[tuple[Hashable, str], list[float | int]] = {}   # key -> [window start, count]
        self._next_sweep = clock() + window

    def allow(self, flow_id: Hashable | None, event_type: str) -> bool:
        if flow_id is None:
            return True
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        key = (flow_id, event_type)
        entry = self._windows.get(key)
        if entry is None or now - entry[0] >= self.window:
            if entry is not None:
                del self._windows[key]         # re-inserted at the end: the dict stays oldest-first
            while len(self._windows) >= self.max_keys:
                del self._windows[next(iter(self._windows))]
            self._windows[key] = [now, 1]
            return True
        if entry[1] >= self.limit:
            self.suppressed += 1
            return False
        entry[1] += 1
        return True

    def _sweep(self, now: float) -> None:
        """Forget windows that have ended; the dict is ordered by window start, so stop at the first live one."""
        expired = []
        for key, entry in self._windows.items():
            if now - entry[0] < self.window:
                break
            expired.append(key)
        for key in expired:
            del self._windows[key]
        self._next_sweep = now + self.window

    def __len__(self) -> int:
        return len(self._windows)

"""Human-facing output on stderr: the progress bar and the end-of-run summary line."""

from __future__ import annotations

import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from agent.pipeline import ReplayResult
    from geo.jurisdiction import Jurisdiction
    from geo.ledger import TransferLedger


class Progress:
    """A one-line progress bar redrawn in place, at most ten times a second."""

    def __init__(self, out: IO[str], width: int = 30) -> None:
        self.out = out
        self.width = width
        self.started = time.monotonic()
        self._last_draw = 0.0

    def update(self, done: int, total: int, name: str) -> None:
        now = time.monotonic()
        if now - self._last_draw < 0.1:
            return
        self._last_draw = now
        fraction = done / total if total else 1.0
        filled = int(fraction * self.width)
        rate = done * 8 / 1e6 / max(now - self.started, 1e-9)
        self.out.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {fraction:6.1%} "
                       f"{rate:8.1f} Mbit/s  {name[-40:]}")
        self.out.flush()

    def clear(self) -> None:
        self.out.write("\r\033[K")
        self.out.flush()


def summary_line(result: ReplayResult) -> str:
    stats = result.stats
    seconds = max(result.seconds, 1e-9)
    anomalies = sum(v for k, v in stats.anomalies.items() if not k.endswith("_bytes"))
    top = ", ".join(f"{name} {count}" for name, count in
                    sorted(((k, v) for k, v in stats.anomalies.items() if not k.endswith("_bytes")),
                           key=lambda kv: (-kv[1], kv[0]))[:4])
    return (f"egresswatch: {stats.packets:,} packets, {stats.bytes / 1e6:,.1f} MB in {seconds:.2f} s "
            f"({stats.bytes * 8 / 1e6 / seconds:,.1f} Mbit/s, {stats.packets / seconds:,.0f} packets/s); "
            f"{stats.flows:,} flows, {stats.flow_events:,} flow events; "
            f"{anomalies:,} anomalies" + (f" ({top})" if top else ""))


def ledger_lines(ledger: TransferLedger, profile: Jurisdiction, sensitivity: dict[str, bool],
                 scope: str = "in this input") -> list[str]:
    """One line per counting year with cross-border personal or important data: estimated
    persons and the mechanism the profile's thresholds call for (`scope` says over what)."""
    lines = []
    for year in ledger.years():
        summary = ledger.summary(year, profile, sensitivity)
        important = "yes" if summary["important_data"] else "no"
        lines.append(f"egresswatch: {year} cross-border {scope} ({profile.name}"
                     f"{', CIIO' if profile.ciio else ''}): ~{summary['nonsensitive_persons']:,} persons' "
                     f"personal information, ~{summary['sensitive_persons']:,} persons' sensitive personal "
                     f"information, important data: {important} -> {summary['required_mechanism']}")
    return lines

"""EVE JSON lines to a file or stdout.

Writes are buffered and flushed on close (and by the OS when the buffer fills); a broken
pipe on stdout (`| head`) ends output quietly instead of raising a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from agent.errors import UsageError
from agent.events import dumps


class EveWriter:
    """One JSON object per line; `-` means stdout. Replay truncates, the live agent appends."""

    def __init__(self, path: str, *, append: bool = False) -> None:
        self.path = path
        self.written = 0
        self.write_errors = 0               # failed writes/flushes (disk full, I/O error)
        self.failure: str | None = None     # the first such error, for the end-of-run report
        self._broken = False
        if path == "-":
            self._out: IO[str] = sys.stdout
            self._owned = False
        else:
            self._out = self._open("a" if append else "w")
            self._owned = True

    def _open(self, mode: str) -> IO[str]:
        try:
            return open(self.path, mode, encoding="utf-8", buffering=1 << 16)
        except OSError as exc:
            raise UsageError(f"cannot open EVE output {self.path}: {exc.strerror}") from None

    def reopen(self) -> None:
        """After logrotate moved the file away (SIGHUP): flush to the old file, append to a new one.
        If the new one cannot be opened, keep writing to the old one rather than lose events."""
        if not self._owned:
            return
        try:
            fresh = self._open("a")
        except UsageError as exc:
            logging.getLogger("egresswatch").error("%s; still writing to the previous file", exc)
            return
        self._out.close()
        self._out = fresh

    def emit(self, event: dict[str, Any]) -> None:
        self.emit_line(dumps(event))

    def emit_line(self, line: str) -> None:
        """An event already encoded by `agent.events.dumps` (replay workers encode in parallel)."""
        if self._broken:
            return
        try:
            self._out.write(line + "\n")
            self.written += 1
        except BrokenPipeError:
            self._broken = True
        except OSError as exc:
            self._lost(exc)

    def flush(self) -> None:
        """Live: make each batch visible to tailing readers (Filebeat) without waiting for 64 KiB."""
        if self._broken:
            return
        try:
            self._out.flush()
        except BrokenPipeError:
            self._broken = True
        except OSError as exc:
            self._lost(exc)

    def close(self) -> None:
        """Never raises: a write error is kept in `failure` (and counted) for the caller to report
        once every exporter is closed."""
        try:
            if self._owned:
                self._out.close()
            elif not self._broken:
                self._out.flush()
        except BrokenPipeError:
            self._broken = True
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        # Disk full or an I/O error: the line, or what a failed flush held, may be lost (the
        # buffer retries what it still holds); keep trying, the next write may succeed once space
        # is freed. Logged once here, counted for the metrics, reported at the end of a replay.
        self.write_errors += 1
        if self.failure is None:
            self.failure = f"cannot write EVE output {self.path}: {exc.strerror or exc}"
            logging.getLogger("egresswatch").error("%s; events may be lost", self.failure)

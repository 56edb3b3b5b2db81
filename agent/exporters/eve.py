"""EVE JSON lines to a file or stdout.

Writes are buffered and flushed on close (and by the OS when the buffer fills); a broken
pipe on stdout (`| head`) ends output quietly instead of raising a traceback.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from agent.errors import UsageError
from agent.events import dumps


class EveWriter:
    """One JSON object per line; `-` means stdout. Replay truncates, the live agent appends."""

    def __init__(self, path: str, *, append: bool = False) -> None:
        self.path = path
        self.written = 0
        self._broken = False
        if path == "-":
            self._out: IO[str] = sys.stdout
            self._owned = False
        else:
            try:
                self._out = open(path, "a" if append else "w", encoding="utf-8", buffering=1 << 16)
            except OSError as exc:
                raise UsageError(f"cannot open EVE output {path}: {exc.strerror}") from None
            self._owned = True

    def emit(self, event: dict[str, Any]) -> None:
        if self._broken:
            return
        try:
            self._out.write(dumps(event) + "\n")
            self.written += 1
        except BrokenPipeError:
            self._broken = True

    def close(self) -> None:
        try:
            if self._owned:
                self._out.close()
            elif not self._broken:
                self._out.flush()
        except BrokenPipeError:
            self._broken = True

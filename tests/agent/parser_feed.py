"""Shared by the app-parser tests: feed a script of (direction, bytes) and ("gap", direction, n)."""

from __future__ import annotations

from typing import Any

from agent.apps.http import Chunk


def feed_all(parser: Any, items: list[tuple[Any, ...]], close: bool = True) -> list[Chunk]:
    chunks: list[Chunk] = []
    for item in items:
        if item[0] == "gap":
            chunks += parser.gap(item[1], item[2])
        else:
            chunks += parser.feed(item[0], item[1])
    if close:
        chunks += parser.close()
    return chunks

"""`replay --workers N`: N processes, each owning the flows whose hash mod N is its index.

Every worker reads the whole capture (reading is cheap: mmap, and frames of flows owned
elsewhere miss the flow table and are dropped after decoding), so no packet crosses a process
boundary. Each worker writes its events, each with its place in one-worker order (frame number,
then a canonical order among flows ending at the same frame; see `Pipeline.emit_key`), to a
spill file; the parent merges the spill files by that key and writes the merged events to the
exporters. The result is the output of one worker, in the same order.

Counters: each frame is counted by one worker only (packets and bytes by worker 0, decode
anomalies by the frame's owner), so the merged Stats equal those of one worker.
"""

from __future__ import annotations

import heapq
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import msgpack

from agent.config import Config
from agent.errors import RunError, UsageError
from agent.events import dumps
from agent.pipeline import (
    Exporter,
    Pipeline,
    ProgressFn,
    ReplayResult,
    CompiledRules,
    Shard,
    compile_rules,
    open_captures,
)
from agent.stats import Stats


class SpillWriter:
    """A worker's events with their merge keys, as msgpack records in a file."""

    def __init__(self, path: str) -> None:
        self._out = open(path, "wb", buffering=1 << 20)
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def emit_keyed(self, key: tuple[int, ...], event: dict[str, Any]) -> None:
        # Encoded here, in parallel, so that the parent's merge only copies lines.
        self._out.write(self._pack((key, dumps(event))))

    def close(self) -> None:
        self._out.close()


def _spilled(path: str) -> Iterator[tuple[list[int], str]]:
    with open(path, "rb") as fh:
        for key, event in msgpack.Unpacker(fh, raw=False, use_list=True, strict_map_key=False):
            yield key, event


def _worker(index: int, count: int, config: Config, paths: Sequence[str], spill: str, strict: bool,
            progress: ProgressFn | None, digest_key: bytes, rules: CompiledRules, conn: Connection) -> None:
    try:
        writer = SpillWriter(spill)
        pipeline = Pipeline(config, [writer], Stats(), strict=strict, shard=Shard(index, count),
                            digest_key=digest_key, rules=rules)
        result = pipeline.replay(open_captures(paths), progress)
        writer.close()
        conn.send(("ok", result))
    except KeyboardInterrupt:
        conn.send(("interrupted", None))
    except UsageError as exc:
        conn.send(("usage", str(exc)))
    except BaseException as exc:        # reported by the parent as one line, with the worker named
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def replay_parallel(config: Config, paths: Sequence[str], workers: int, exporters: Sequence[Exporter], *,
                    strict: bool = False, progress: ProgressFn | None = None,
                    digest_key: bytes | None = None) -> ReplayResult:
    """Replay `paths` with `workers` processes; events reach `exporters` in one-worker order."""
    digest_key = digest_key or os.urandom(16)       # one for all workers: their value digests merge
    context = multiprocessing.get_context("fork")   # children inherit the compiled rules and config
    rules = compile_rules(config)                   # once, not once per worker
    spill_dir = tempfile.mkdtemp(prefix="egresswatch-workers-")
    started = time.perf_counter()
    processes = []
    try:
        receivers = []
        for index in range(workers):
            spill = os.path.join(spill_dir, f"worker-{index}.msgpack")
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker, name=f"egresswatch-worker-{index}",
                args=(index, workers, config, paths, spill, strict, progress if index == 0 else None, digest_key,
                      rules, sender))
            process.start()
            sender.close()
            processes.append(process)
            receivers.append(receiver)
        results = [_receive(index, receiver) for index, receiver in enumerate(receivers)]
        for process in processes:
            process.join()
        merged = ReplayResult(Stats())
        for result in results:
            merged.stats.merge(result.stats)
        merged.damaged = results[0].damaged
        spills = [_spilled(os.path.join(spill_dir, f"worker-{index}.msgpack")) for index in range(workers)]
        for _key, line in heapq.merge(*spills, key=lambda record: record[0]):
            for exporter in exporters:
                emit_line = getattr(exporter, "emit_line", None)
                if emit_line is not None:
                    emit_line(line)
                else:
                    exporter.emit(json.loads(line))
        merged.seconds = time.perf_counter() - started
        return merged
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
        shutil.rmtree(spill_dir, ignore_errors=True)


def _receive(index: int, receiver: Connection) -> ReplayResult:
    try:
        status, payload = receiver.recv()
    except EOFError:
        raise RunError(f"replay worker {index} died without a result (killed, or out of memory?)") from None
    if status == "ok":
        return payload
    if status == "interrupted":
        raise KeyboardInterrupt
    if status == "usage":
        raise UsageError(payload)
    raise RunError(f"replay worker {index} failed: {payload}")

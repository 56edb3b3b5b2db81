"""Bounded on-disk spool of msgpack records, and the sender-thread scaffold of the network sinks.

A spool directory holds append-only segment files and one small position file:

    00000000000000000007.seg   8-byte magic, then frames: u32 length, u32 CRC-32 of the payload,
                               payload = one msgpack object (little-endian header)
    position                   msgpack [segment number, byte offset] of the first record not yet delivered
    lock                       flock()ed while a spool has the directory open: one user at a time

Records are read in the order they were appended, from the persisted position, so a restart
resumes where the last run stopped. A reader takes records without consuming them and commits a
cursor once the receiver has accepted them; nothing is removed before that (at-least-once: a crash
between send and commit sends again). When the byte limit would be exceeded the oldest whole
segment is deleted and its undelivered records are counted as dropped; segments are a sixteenth of
the limit, so the spool never holds more than its limit and a drop never loses more than 1/16 of it.

On open every segment is checked frame by frame: a frame that is cut short or whose CRC does not
match (a write torn by a crash or power loss, or a zero-filled tail) ends that segment; the file is
truncated there and the loss is counted as one torn record.

fsync policy: every append is written to the kernel before emit() returns, so a crash of the agent
loses nothing. fsync is not called per record (it costs milliseconds on the packet thread); the
sender thread fsyncs the segment being written (and the directory after a segment is created or
removed) once a second and at close. A power failure can therefore lose up to a second of events
and leave a torn tail, which the next open detects. The position file is replaced atomically and
not fsynced: after a power failure it can only be older, which replays records (duplicates), never
skips them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

import msgpack

from agent.errors import UsageError
from agent.exporters.ratelimit import FlowRateLimiter

logger = logging.getLogger(__name__)

MAGIC = b"EWSPOOL1"
HEADER = len(MAGIC)
_FRAME = struct.Struct("<II")           # payload length, CRC-32 of the payload
MIN_LIMIT_BYTES = 64 << 10
MAX_SEGMENT_BYTES = 8 << 20
SYNC_INTERVAL = 1.0                     # seconds between fsyncs by the sender thread
_POSITION = "position"
_LOCK = "lock"
_SUFFIX = ".seg"


class Cursor(NamedTuple):
    """A place in the spool: before the record at `offset` (the `index`-th) of segment `seq`."""
    seq: int
    offset: int
    index: int


@dataclass(slots=True)
class _Segment:
    seq: int
    size: int           # bytes on disk, magic included
    records: int        # complete records in it


class Spool:
    """emit() appends on the packet thread while one sender thread reads and commits.

    The lock guards the segment list and counters. Under it append() writes one frame; reads,
    position saves and deletions by the sender happen outside it, so a sender that is slow or
    descheduled never holds up the packet thread.
    """

    def __init__(self, directory: str, limit_bytes: int, *, segment_bytes: int = 0) -> None:
        if limit_bytes < MIN_LIMIT_BYTES:
            raise UsageError(f"spool limit must be at least {MIN_LIMIT_BYTES} bytes, got {limit_bytes}")
        self.directory = directory
        self.limit_bytes = limit_bytes
        self.segment_bytes = segment_bytes or min(MAX_SEGMENT_BYTES, limit_bytes // 16)
        self.dropped = 0            # records lost: deleted to stay under the limit (oldest first), or torn
        self.torn = 0               # damaged frames found (each ends its segment)
        self.failed = 0             # appends that could not be written (disk full, I/O error)
        self.last_error = ""
        self._lock = threading.Lock()
        self._segments: deque[_Segment] = deque()
        self._bytes = 0             # sum of segment sizes
        self._records = 0           # sum of segment records
        self._next_seq = 1
        self._writer: BinaryIO | None = None      # the last segment, opened for append
        self._reader: tuple[int, int] | None = None     # (segment, descriptor): the sender's own
        self._position_lock = threading.Lock()
        self._unsynced = False      # appended since the last fsync
        self._dir_unsynced = False  # segments created or removed since the last fsync
        self._closed = False
        self._dir_lock: BinaryIO | None = None
        try:
            os.makedirs(directory, exist_ok=True)
            self._dir_lock = self._lock_directory()
            self._head = self._recover()
        except BaseException as exc:
            if self._dir_lock is not None:
                self._dir_lock.close()
            if isinstance(exc, OSError):
                raise UsageError(f"cannot use spool directory {directory}: {exc.strerror or exc}") from None
            raise

    def _lock_directory(self) -> BinaryIO:
        """One spool per directory: two writers would interleave frames and fight over the position."""
        handle = open(os.path.join(self.directory, _LOCK), "ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UsageError(f"spool directory {self.directory} is in use by another sink or agent") from None
        return handle

    # -- properties read by stats() on any thread: plain int reads, no lock needed --------------------

    @property
    def depth(self) -> int:
        """Records not yet committed as delivered."""
        with self._lock:
            return self._depth()

    def _depth(self) -> int:
        return self._records - self._head.index

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def head(self) -> Cursor:
        return self._head

    # -- writer side ---------------------------------------------------------------------------------

    def append(self, record: Any) -> bool:
        """Add one record at the end; False (and counted) if it could not be stored."""
        try:
            payload = msgpack.packb(record)
        except (TypeError, ValueError, OverflowError) as exc:
            self.failed += 1
            self.last_error = f"record not serialisable: {type(exc).__name__}"
            return False
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._closed:
                return False
            if len(frame) + HEADER > self.limit_bytes:
                self.dropped += 1
                self.last_error = "record larger than the spool limit"
                return False
            while self._segments and self._bytes + len(frame) + HEADER > self.limit_bytes:
                self._drop_oldest()
            try:
                segment, writer = self._writable(len(frame))
                try:
                    writer.write(frame)
                    writer.flush()
                except OSError:
                    self._undo_partial(segment)
                    raise
            except OSError as exc:
                self.failed += 1
                self.last_error = f"spool write failed: {exc.strerror or exc}"
                return False
            segment.size += len(frame)
            segment.records += 1
            self._bytes += len(frame)
            self._records += 1
            self._unsynced = True
            return True

    def _writable(self, frame_len: int) -> tuple[_Segment, BinaryIO]:
        last = self._segments[-1] if self._segments else None
        if last is not None and (last.records == 0 or last.size + frame_len <= self.segment_bytes):
            if self._writer is None:
                self._writer = open(self._path(last.seq), "ab")
            return last, self._writer
        seq = self._next_seq
        writer = open(self._path(seq), "xb")
        try:
            writer.write(MAGIC)
            writer.flush()
        except OSError:
            writer.close()
            os.unlink(self._path(seq))
            raise
        self._next_seq += 1
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        segment = _Segment(seq, HEADER, 0)
        self._segments.append(segment)
        self._bytes += HEADER
        self._dir_unsynced = True
        if self._depth() == 0:
            self._head = Cursor(seq, HEADER, 0)     # everything before is delivered: start here
            self._unlink(self._pop_before(seq))
        return segment, writer

    def _undo_partial(self, segment: _Segment) -> None:
        """A failed write may have left part of a frame: cut it off so the next append starts clean."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
        except OSError:
            pass
        try:
            os.truncate(self._path(segment.seq), segment.size)
        except OSError:
            pass

    def _drop_oldest(self) -> None:
        segment = self._segments.popleft()
        done = self._head.index if self._head.seq == segment.seq else 0
        self.dropped += segment.records - done
        self._forget(segment)
        self._unlink([segment])
        first = self._segments[0].seq if self._segments else self._next_seq
        if self._head.seq <= segment.seq:
            self._head = Cursor(first, HEADER, 0)

    def _forget(self, segment: _Segment) -> None:
        """Account for a segment that has left the deque (its file is unlinked by the caller)."""
        if self._writer is not None and not self._segments:
            self._writer.close()
            self._writer = None
        self._bytes -= segment.size
        self._records -= segment.records
        self._dir_unsynced = True

    def _pop_before(self, seq: int) -> list[_Segment]:
        doomed = []
        while self._segments and self._segments[0].seq < seq:
            doomed.append(self._segments.popleft())
            self._forget(doomed[-1])
        return doomed

    def _unlink(self, segments: list[_Segment]) -> None:
        for segment in segments:
            try:
                os.unlink(self._path(segment.seq))
            except FileNotFoundError:
                pass

    # -- reader side: only the sink's sender thread reads and commits ---------------------------------

    def read(self, cursor: Cursor | None = None, *, max_records: int = 256,
             max_bytes: int = 256 << 10) -> list[tuple[Any, Cursor]]:
        """Records from `cursor` (default: the head), each with the cursor just after it.

        Stays within one segment per call; a cursor behind the head (its records were delivered or
        dropped) starts at the head. The file is read outside the lock: segments only grow, so the
        bytes below the size seen under the lock stay as they are, and a segment dropped meanwhile
        stays readable through the open descriptor. A frame that no longer checks out ends its
        segment (torn)."""
        for _ in range(8):                  # a few hops past damaged or vanished segments, then later
            with self._lock:
                if self._closed:
                    return []
                cursor = self._advance(self._head if cursor is None or cursor < self._head else cursor)
                segment = self._segment(cursor.seq)
                if segment is None or cursor.offset >= segment.size:
                    return []
                size = segment.size
            try:
                out, damaged_at = self._parse(self._reader_fd(cursor.seq), cursor, size, max_records, max_bytes)
            except OSError:                 # dropped for space before we opened it: go on from the head
                self._close_reader()
                continue
            if out or damaged_at is None:
                return out
            with self._lock:
                cursor = self._damaged(damaged_at)
        return []

    def _parse(self, fd: int, cursor: Cursor, size: int, max_records: int,
               max_bytes: int) -> tuple[list[tuple[Any, Cursor]], Cursor | None]:
        """Records of one segment from `cursor` up to `size`, and where damage cut them short (or None)."""
        data = os.pread(fd, min(size - cursor.offset, max_bytes), cursor.offset)
        out: list[tuple[Any, Cursor]] = []
        pos, offset, index = 0, cursor.offset, cursor.index
        while len(out) < max_records and offset < size:
            left = size - offset                  # bytes of this segment from here on
            if pos + _FRAME.size > len(data):
                if out:
                    break                         # the rest next time
                data += os.pread(fd, _FRAME.size, offset + len(data))
            if left < _FRAME.size or pos + _FRAME.size > len(data):
                return out, Cursor(cursor.seq, offset, index)
            length, crc = _FRAME.unpack_from(data, pos)
            end = pos + _FRAME.size + length
            if length == 0 or _FRAME.size + length > left:
                return out, Cursor(cursor.seq, offset, index)
            if end > len(data):
                if out:
                    break
                data += os.pread(fd, end - len(data), offset + len(data))   # one record larger than max_bytes
            payload = data[pos + _FRAME.size:end]
            try:
                if len(payload) != length or zlib.crc32(payload) != crc:
                    raise ValueError("frame does not check out")
                record = msgpack.unpackb(payload)
            except (ValueError, msgpack.UnpackException):
                return out, Cursor(cursor.seq, offset, index)
            offset += end - pos
            index += 1
            pos = end
            out.append((record, Cursor(cursor.seq, offset, index)))
        return out, None

    def _damaged(self, at: Cursor) -> Cursor:
        """The disk changed under us (it checked out on open): cut the segment there, count the loss."""
        segment = self._segment(at.seq)
        if self._closed or segment is None or at.offset >= segment.size:
            return at                       # dropped meanwhile: nothing left to cut
        lost = segment.records - at.index
        self.torn += 1
        self.dropped += lost
        self.last_error = "damaged spool record skipped"
        logger.warning("spool %s: damaged record at byte %d of segment %d; %d records lost",
                       self.directory, at.offset, at.seq, lost)
        try:
            os.truncate(self._path(at.seq), at.offset)   # the writer appends (O_APPEND) after the cut
        except OSError:
            pass
        self._bytes -= segment.size - at.offset
        self._records -= lost
        segment.size = at.offset
        segment.records = at.index
        return at

    def commit(self, cursor: Cursor) -> None:
        """Everything before `cursor` was accepted by the receiver: it leaves the spool."""
        with self._lock:
            if self._closed or cursor <= self._head or self._segment(cursor.seq) is None:
                return                      # already committed, or its segment was dropped meanwhile
            self._head = head = self._advance(cursor)
            doomed = self._pop_before(head.seq)
        self._unlink(doomed)
        self._save_position(head)

    def _advance(self, cursor: Cursor) -> Cursor:
        """A cursor at the end of a segment that has a successor points at the successor's start."""
        for segment in self._segments:
            if segment.seq > cursor.seq and self._at_end(cursor):
                return Cursor(segment.seq, HEADER, 0)
        return cursor

    def _at_end(self, cursor: Cursor) -> bool:
        segment = self._segment(cursor.seq)
        return segment is None or cursor.offset >= segment.size

    def _segment(self, seq: int) -> _Segment | None:
        for segment in self._segments:
            if segment.seq == seq:
                return segment
        return None

    def _reader_fd(self, seq: int) -> int:
        if self._reader is None or self._reader[0] != seq:
            self._close_reader()
            self._reader = (seq, os.open(self._path(seq), os.O_RDONLY))
        return self._reader[1]

    def _close_reader(self) -> None:
        if self._reader is not None:
            os.close(self._reader[1])
            self._reader = None

    # -- durability ----------------------------------------------------------------------------------

    def sync(self) -> None:
        """fsync what was appended since the last call (sender thread, once a second, and close)."""
        with self._lock:
            if self._closed:
                return
            fd = os.dup(self._writer.fileno()) if self._unsynced and self._writer is not None else -1
            sync_dir = self._dir_unsynced
            self._unsynced = self._dir_unsynced = False
        try:                                 # outside the lock: emit() must not wait for the disk
            if fd >= 0:
                os.fsync(fd)
            if sync_dir:
                dir_fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            self.last_error = f"spool fsync failed: {exc.strerror or exc}"
        finally:
            if fd >= 0:
                os.close(fd)

    def close(self) -> None:
        self.sync()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            head = self._head
            if self._writer is not None:
                try:
                    self._writer.close()
                except OSError as exc:
                    self.last_error = f"spool close failed: {exc.strerror or exc}"
                self._writer = None
        self._save_position(head)
        self._close_reader()
        if self._dir_lock is not None:
            self._dir_lock.close()            # releases the flock
            self._dir_lock = None

    def _save_position(self, head: Cursor) -> None:
        """Replace the position file (atomic rename; not fsynced, see the module docstring)."""
        with self._position_lock:
            tmp = os.path.join(self.directory, _POSITION + ".tmp")
            try:
                with open(tmp, "wb") as out:
                    out.write(msgpack.packb([head.seq, head.offset]))
                os.replace(tmp, os.path.join(self.directory, _POSITION))
            except OSError as exc:
                self.last_error = f"spool position not saved: {exc.strerror or exc}"

    # -- open ----------------------------------------------------------------------------------------

    def _recover(self) -> Cursor:
        """Check every segment, cut torn tails, and find the first undelivered record."""
        seqs = sorted(int(name[:-len(_SUFFIX)]) for name in os.listdir(self.directory)
                      if name.endswith(_SUFFIX) and name[:-len(_SUFFIX)].isdigit())
        position_seq, position_offset = self._load_position()
        head: Cursor | None = None
        for seq in seqs:
            if seq < position_seq:           # delivered; the crash came before its removal
                os.unlink(self._path(seq))
                continue
            segment, head_here = self._check(seq, position_offset if seq == position_seq else None)
            self._segments.append(segment)
            self._bytes += segment.size
            self._records += segment.records
            if head is None:
                head = head_here or Cursor(seq, HEADER, 0)
        self._next_seq = max([position_seq, *seqs]) + 1
        return head or Cursor(self._next_seq, HEADER, 0)

    def _check(self, seq: int, position: int | None) -> tuple[_Segment, Cursor | None]:
        """Validate one segment; returns it and, when `position` is given, the cursor at or after it."""
        path = self._path(seq)
        with open(path, "rb") as source:
            data = source.read()
        if not data.startswith(MAGIC):
            if not MAGIC.startswith(data):   # longer than a cut-short magic: someone else's file
                raise UsageError(f"{path} is not an egresswatch spool segment; move it out of the spool directory")
            with open(path, "wb") as out:     # created, then the crash came before the magic was written
                out.write(MAGIC)
            return _Segment(seq, HEADER, 0), (Cursor(seq, HEADER, 0) if position is not None else None)
        pos, records, cursor = HEADER, 0, None
        while pos < len(data):
            if position is not None and cursor is None and pos >= position:
                cursor = Cursor(seq, pos, records)
            if pos + _FRAME.size > len(data):
                break
            length, crc = _FRAME.unpack_from(data, pos)
            end = pos + _FRAME.size + length
            if length == 0 or end > len(data) or zlib.crc32(data[pos + _FRAME.size:end]) != crc:
                break
            pos = end
            records += 1
        if pos < len(data):
            self.torn += 1
            self.dropped += 1                # the record whose write was cut short
            self.last_error = "torn spool record skipped"
            logger.warning("spool %s: damaged record at byte %d of %s skipped (%d bytes cut)",
                           self.directory, pos, os.path.basename(path), len(data) - pos)
            os.truncate(path, pos)
        if position is not None and cursor is None:
            cursor = Cursor(seq, pos, records)
        return _Segment(seq, pos, records), cursor

    def _load_position(self) -> tuple[int, int]:
        try:
            with open(os.path.join(self.directory, _POSITION), "rb") as source:
                seq, offset = msgpack.unpackb(source.read())
            if isinstance(seq, int) and isinstance(offset, int) and seq >= 0 and offset >= 0:
                return seq, offset
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, msgpack.UnpackException):
            logger.warning("spool %s: position file unreadable; replaying from the oldest record", self.directory)
        return 0, 0

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:020d}{_SUFFIX}")


# -- the part every network sink shares ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SinkStats:
    """A sink's counters for the metrics module (egresswatch_sink_*{sink=name})."""
    name: str
    queue_depth: int    # records waiting, spooled and sent-but-unconfirmed included
    spool_bytes: int    # bytes of spool files on disk
    sent: int           # records the receiver accepted (they left the spool)
    dropped: int        # records lost for good: spool overflow, torn or unwritable records, refused by the receiver
    suppressed: int     # events held back by the per-flow rate limit
    retries: int        # failed delivery attempts that were retried
    last_error: str     # short, never holds event content or credentials; "" when none


class DeliveryError(Exception):
    """The receiver did not take the records; the message is short and holds no event data."""


def backoff_delay(failures: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random, so senders that
    failed together do not retry together, yet never retry much sooner than the step."""
    step = min(maximum, initial * 2 ** min(failures - 1, 30))
    return step / 2 + (rng or random).uniform(0, step / 2)


class SpooledSink:
    """emit() appends to the spool; a sender thread delivers from it and commits what was accepted.

    Subclasses implement `_deliver()` (send something; True if there may be more to do at once;
    raise DeliveryError to back off and retry) and `_disconnect()`.
    """

    name = "sink"

    def __init__(self, *, spool_dir: str, spool_limit_bytes: int, drain_timeout: float,
                 event_types: Iterable[str], rate_limit_events: int, rate_limit_window: float,
                 retry_initial: float, retry_max: float, io_timeout: float) -> None:
        if drain_timeout < 0 or retry_initial <= 0 or retry_max < retry_initial or io_timeout <= 0:
            raise UsageError(f"{self.name} sink: drain_timeout >= 0, 0 < retry_initial <= retry_max and "
                             f"timeout > 0 are required")
        if rate_limit_events < 0 or (rate_limit_events and rate_limit_window <= 0):
            raise UsageError(f"{self.name} sink: rate limit wants events >= 0 (0 = none) and a window > 0")
        self.drain_timeout = drain_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.io_timeout = io_timeout
        self.event_types = frozenset(event_types)
        self.limiter = FlowRateLimiter(rate_limit_events, rate_limit_window) if rate_limit_events else None
        self.spool = Spool(spool_dir, spool_limit_bytes)
        self.sent = 0
        self.retries = 0
        self.refused = 0               # records the receiver rejected for good (counted as dropped)
        self.last_error = ""
        self._closing = False
        self._deadline = 0.0
        self._wake = threading.Event()     # emit() -> sender: something new
        self._stop = threading.Event()     # close() -> sender: cut a backoff pause short
        self._thread = threading.Thread(target=self._run, name=f"egresswatch-{self.name}-sender", daemon=True)

    def _start(self) -> None:
        """Called by subclasses at the end of their __init__, once their options are checked."""
        self._thread.start()

    def emit(self, event: dict[str, Any]) -> None:
        event_type = event.get("event_type")
        if self._closing or event_type not in self.event_types:
            return
        if self.limiter is not None and not self.limiter.allow(event.get("flow_id"), event_type):
            return
        self.spool.append([time.time_ns() // 1000, event])    # [created (µs since the epoch), event]
        self._wake.set()

    def close(self) -> None:
        """Stop accepting, deliver for at most drain_timeout seconds, keep the rest for the next start."""
        if self._closing:
            return
        self._deadline = time.monotonic() + self.drain_timeout
        self._closing = True
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            # The sender stops at the deadline; an I/O call in progress ends within io_timeout.
            self._thread.join(self.drain_timeout + self.io_timeout + 1.0)
        self.spool.close()
        if self.spool.depth:
            logger.warning("%s sink: %d events kept in the spool for the next start", self.name, self.spool.depth)

    def stats(self) -> SinkStats:
        spool = self.spool
        return SinkStats(name=self.name, queue_depth=spool.depth, spool_bytes=spool.bytes, sent=self.sent,
                         dropped=spool.dropped + spool.failed + self.refused,
                         suppressed=self.limiter.suppressed if self.limiter is not None else 0,
                         retries=self.retries, last_error=self.last_error or spool.last_error)

    # -- sender thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        next_sync = time.monotonic() + SYNC_INTERVAL
        while True:
            now = time.monotonic()
            if self._closing and (self.spool.depth == 0 or now >= self._deadline):
                break
            if now >= next_sync:
                self.spool.sync()
                next_sync = now + SYNC_INTERVAL
            try:
                busy = self._deliver()
            except DeliveryError as exc:
                self.last_error = str(exc)[:200]
            except Exception as exc:        # a bug must not end delivery; the spool keeps the events
                if not self.last_error.startswith("internal error"):
                    logger.exception("%s sink: internal error in the sender (retrying)", self.name)
                self.last_error = f"internal error in the sender: {type(exc).__name__}"
            else:
                failures = 0
                if not busy:
                    self._wake.wait(self._idle_wait())
                    self._wake.clear()
                continue
            failures += 1
            self.retries += 1
            self._disconnect()
            self._pause(backoff_delay(failures, self.retry_initial, self.retry_max))
        self._disconnect()

    def _pause(self, delay: float) -> None:
        if not self._closing:
            self._stop.wait(delay)        # close() ends the pause: one more try right away
        else:
            time.sleep(max(0.0, min(delay, self._deadline - time.monotonic())))

    def _idle_wait(self) -> float:
        return SYNC_INTERVAL

    def _deliver(self) -> bool:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

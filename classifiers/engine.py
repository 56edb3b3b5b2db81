"""Hyperscan stream-mode matcher with Python confirmation of each candidate.

One `Engine` per process compiles every rule into one stream-mode database (cached on disk,
keyed by a hash of the rules and the Hyperscan version); scans use the database's own
scratch, so each worker process, having its own database, has its own scratch. Each flow
direction opens a `ScanStream`: values split across TCP segments, chunk boundaries or decoder
outputs are found because Hyperscan keeps the automaton state between writes.

Hyperscan reports every end offset of every match (`SOM_LEFTMOST` gives the leftmost start
for each), so one 16-digit card yields several candidates. The stream groups candidates by
(rule, start), and within a group tries the longest first: boundary check on the bytes
around it (Hyperscan has no lookaround), hotword check when the rule needs one, normalize,
validate. A candidate ending exactly at the end of a write may continue in the next one,
so its group waits for the next write or for `close()`.

What is compiled (`expressions`): a `fenced` rule's pattern behind one byte outside its
boundary set, so its left boundary is checked by Hyperscan and a match's start is that byte;
every stream begins with `_EDGE` so that a value at offset 0 has one too. Rules with an
`anchor` (e-mail) are compiled without SOM: their start comes from the anchor byte, and a
leftmost start over an unbounded run of local-part bytes was the most expensive thing the
database did (issue 5, benchmarks/RESULTS.md).

python-hyperscan 0.9.1 traps avoided here (each has a regression test):
- the stream keeps *borrowed* references to its handler and context: both are owned by the
  `ScanStream` (the bound method is stored, since each attribute access makes a new one);
- `Stream.close(scratch=...)` with a keyword corrupts memory: `close()` is called bare;
- `Stream.scan(data, scratch=...)` segfaults at the first match of a SOM stream database
  (measured here with 0.9.1): `scan()` gets no scratch argument;
- `Stream.size()` segfaults: never called;
- literal mode truncates at NUL: only the regex API is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import hyperscan

from agent.errors import UsageError
from classifiers import normalize, validators
from classifiers.classes import RULES, Rule

logger = logging.getLogger(__name__)

WINDOW = 512              # bytes of history kept per stream: longest value plus hotword context
HOTWORD_REACH = 48        # a hotword must end within this many bytes before the value
NOT_AFTER_REACH = 48      # bytes before a value that a rule's `not_after` regex looks at
BINARY_CONTEXT = 16       # bytes either side of a text-only candidate checked for binary data
_TEXT_CONTROLS = bytes(b for b in range(32) if b not in b"\t\n\r\f\v") + b"\x7f"
_EDGE = b"\n"             # written first in every stream: the left fence of a value at offset 0

ValueSink = Callable[[str, str, str], None]    # (class_id, normalized value, confidence)


def expressions(rules: Sequence[Rule]) -> tuple[list[bytes], list[int]]:
    """The Hyperscan expressions and flags the engine compiles for `rules` (ids are indexes).

    Benchmarks that measure "Hyperscan alone with the same patterns" compile these."""
    patterns: list[bytes] = []
    flags: list[int] = []
    for rule in rules:
        pattern = rule.pattern
        if rule.fenced:
            outside = b"".join(b"\\x%02x" % c for c in sorted(rule.boundary))
            pattern = b"[^" + outside + b"](?:" + pattern + b")"
        patterns.append(pattern)
        flags.append((0 if rule.anchor else hyperscan.HS_FLAG_SOM_LEFTMOST)
                     | (hyperscan.HS_FLAG_CASELESS if rule.caseless else 0))
    return patterns, flags


def _check_for(rule: Rule) -> Callable[[str], str | None]:
    """normalized value -> the value to count, or None. Wraps validators by rule."""
    if rule.validator == "any":          # rule-pack terms and regexes: the match is the finding
        return lambda value: value
    validate = validators.VALIDATORS[rule.validator] if rule.validator in validators.VALIDATORS \
        else getattr(validators, rule.validator)
    if rule.validator == "mrz_passport_line":
        def check_mrz(value: str) -> str | None:
            return validate(value) or None
        return check_mrz
    if rule.class_id == "cn_uscc":
        def check_uscc(value: str) -> str | None:
            # A candidate that is a valid resident id (17 digits + digit or X, both in the USCC
            # alphabet) is the id, not a code: 1 in 31 ids would also pass the USCC check.
            if validators.cn_resident_id(value):
                return None
            return value if validate(value) else None
        return check_uscc

    def check(value: str) -> str | None:
        return value if validate(value) else None
    return check


class Engine:
    """Compiled rules + scratch for one process. Build once; open a stream per flow direction."""

    def __init__(self, rules: Sequence[Rule] = RULES, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.rules = tuple(rules)
        self._normalizers = [normalize.NORMALIZERS.get(r.class_id, str.casefold if r.caseless else str)
                             for r in self.rules]
        self._checks = [_check_for(r) for r in self.rules]
        self._hotwords = [tuple({w.lower().encode(enc) for w in r.hotwords for enc in ("utf-8", "gbk")})
                          for r in self.rules]
        self._anchors = [r.anchor for r in self.rules]
        self._not_after = [re.compile(b"(?:" + r.not_after + rb")\Z").search if r.not_after else None
                           for r in self.rules]
        self.database = self._load_or_compile(cache_dir)
        self.rejected: dict[str, int] = {}        # validator rejects by class (for metrics)

    def stream(self, sink: ValueSink) -> ScanStream:
        return ScanStream(self, sink)

    def scan_bytes(self, data: bytes, sink: ValueSink) -> None:
        """Scan one complete buffer (a file in `rules test`, a UDP payload)."""
        stream = self.stream(sink)
        stream.write(data)
        stream.close()

    # -- compile -------------------------------------------------------------------------

    @staticmethod
    def _fingerprint(patterns: list[bytes], flags: list[int]) -> str:
        h = hashlib.sha256(b"egresswatch-rules-v2")
        h.update(repr(getattr(hyperscan, "__version__", "")).encode())
        for pattern, flag in zip(patterns, flags):
            h.update(pattern + b"\0%d\0" % flag)
        return h.hexdigest()[:24]

    def _load_or_compile(self, cache_dir: str | os.PathLike[str] | None) -> hyperscan.Database:
        patterns, flags = expressions(self.rules)
        cache = _RuleCache.open(Path(cache_dir)) if cache_dir else None
        name = f"rules-{self._fingerprint(patterns, flags)}.hsdb"
        try:
            data = cache.read(name) if cache is not None else None
            if data is not None:
                try:
                    database = hyperscan.loadb(data, mode=hyperscan.HS_MODE_STREAM)
                    # A deserialized database comes without the scratch that compile() allocates.
                    database.scratch = hyperscan.Scratch(database)
                    return database
                except Exception as exc:      # stale, foreign or damaged file: recompile
                    logger.warning("ignoring unusable rule cache %s: %s", cache.path / name, exc)
            database = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM | hyperscan.HS_MODE_SOM_HORIZON_SMALL)
            try:
                database.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns),
                                 flags=flags)
            except hyperscan.error as exc:
                raise UsageError(f"cannot compile the classification rules: {exc}") from None
            if cache is not None:
                cache.write(name, hyperscan.dumpb(database))
            return database
        finally:
            if cache is not None:
                cache.close()


def cache_directory(setting: str) -> Path | None:
    """The rule cache directory a `rule_cache` setting names: "auto" is the cache directory
    systemd gives the service ($CACHE_DIRECTORY), else $XDG_CACHE_HOME/egresswatch, else
    ~/.cache/egresswatch (the XDG default); "off" is none; anything else a directory."""
    if setting in ("", "off", "none"):
        return None
    if setting != "auto":
        return Path(setting)
    service = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if service:
        return Path(service)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "egresswatch"


class _RuleCache:
    """The cache directory, held open. A compiled database is native code's input: loading one
    that someone else wrote would hand them the scanner. So the directory and the file are
    checked on the descriptors that are then read (no path is looked up twice, no symlink
    followed): owned by this user or root, writable by no one else."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: Path) -> _RuleCache | None:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            logger.warning("rule cache %s unusable, compiling the rules: %s", path, exc.strerror or exc)
            return None
        if not _trusted(os.fstat(fd)):
            os.close(fd)
            logger.warning("rule cache %s not used: it must belong to this user (or root) and be writable "
                           "by no one else", path)
            return None
        return cls(path, fd)

    def read(self, name: str) -> bytes | None:
        try:
            # O_NONBLOCK: a FIFO put in the place of the file must not hang the start.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or not _trusted(st):
                return None
            os.set_blocking(fh.fileno(), True)
            return fh.read()

    def write(self, name: str, data: bytes) -> None:
        tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=self.fd)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as exc:
            logger.warning("cannot write rule cache %s: %s", self.path / name, exc.strerror or exc)
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass

    def close(self) -> None:
        os.close(self.fd)


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid in (os.geteuid(), 0) and not st.st_mode & 0o022


class ScanStream:
    """Matches across the writes of one flow direction; reports confirmed values to `sink`."""

    __slots__ = ("engine", "sink", "_hs", "_handler", "_found", "_tail", "_base", "_end", "_pending", "_closed")

    def __init__(self, engine: Engine, sink: ValueSink) -> None:
        self.engine = engine
        self.sink = sink
        self._found: list[tuple[int, int, int]] = []     # (rule, start, end) from the current write
        self._tail = bytearray(_EDGE)                    # the last WINDOW bytes (+ the current write)
        self._base = 0                                   # stream offset of _tail[0]
        self._end = len(_EDGE)                           # stream offset after the last write
        self._pending: list[tuple[int, int, int]] = []   # candidates that may continue in the next write
        self._closed = False
        # The Hyperscan stream only borrows its handler and context. `self._on_match` makes a new
        # bound-method object at each access, so keep the one we pass; the context is self.
        self._handler = self._on_match
        self._hs = engine.database.stream(match_event_handler=self._handler, context=self)
        self._hs.__enter__()
        self._hs.scan(_EDGE)

    def _on_match(self, rule: int, start: int, end: int, flags: int, context: object) -> None:
        self._found.append((rule, start, end))

    def write(self, data: bytes | memoryview) -> None:
        if self._closed or not len(data):
            return
        self._hs.scan(data)        # no scratch= keyword: see the module docstring
        self._tail += data
        self._end += len(data)
        if self._found or self._pending:
            self._confirm(final=False)
        excess = len(self._tail) - WINDOW
        if excess > 0:
            del self._tail[:excess]
            self._base += excess

    def close(self) -> None:
        """End of the direction: Hyperscan may report matches held back at the last byte."""
        if self._closed:
            return
        self._closed = True
        self._hs.close()
        if self._found or self._pending:
            self._confirm(final=True)
        self._tail = bytearray()
        # The handler is a bound method of self held by self (and by the Hyperscan stream):
        # dropping both ends the cycle, so a finished flow is freed at once, not by the collector.
        self._hs = self._handler = None     # type: ignore[assignment]

    # -- confirmation ----------------------------------------------------------------------

    def _confirm(self, *, final: bool) -> None:
        """Group this write's candidates (and those held back) by (rule, value start) and
        confirm every group that cannot grow any more."""
        found, pending = self._found, self._pending
        self._found = []
        self._pending = []
        anchors = self.engine._anchors
        groups: dict[tuple[int, int], list[int]] = {}
        for rule, start, end in pending:           # their starts are already value starts
            groups.setdefault((rule, start), []).append(end)
        for rule, start, end in found:
            anchor = anchors[rule]
            if anchor:
                start = self._anchor_at(anchor, end)
                if start < 0:
                    continue
            groups.setdefault((rule, start), []).append(end)
        end_of_data = self._end
        for (rule, start), ends in groups.items():
            if not final and max(ends) >= end_of_data:
                self._pending.extend((rule, start, e) for e in ends)
                continue
            self._confirm_group(rule, start, sorted(set(ends), reverse=True))

    def _anchor_at(self, anchor: bytes, end: int) -> int:
        """Stream offset of the last anchor byte before `end` (an e-mail's "@": its domain holds
        none), or -1 when that lies before the window."""
        at = self._tail.rfind(anchor, 0, end - self._base)
        return at + self._base if at >= 0 else -1

    def _confirm_group(self, rule_index: int, start: int, ends: list[int]) -> None:
        """`start` is the stream offset of the match: a fenced rule's fence byte, an anchored
        rule's anchor byte, otherwise the value's first byte."""
        engine = self.engine
        rule = engine.rules[rule_index]
        tail, base = self._tail, self._base
        boundary = rule.boundary
        if rule.anchor:
            lo = self._token_start(rule, start - base)
            if lo < 0:
                return
        elif rule.fenced:
            lo = start + 1 - base          # Hyperscan checked the byte before it
            if lo < 0:
                return                     # longer than the window: no identifier we know is
        else:
            lo = start - base
            if lo < 0:
                return
            if lo > 0 and tail[lo - 1] in boundary:
                return
        if rule.text_only and self._binary_around(base + lo, ends[0]):
            return
        if rule.hotwords and not self._has_hotword(rule_index, lo):
            return
        not_after = engine._not_after[rule_index]
        if not_after is not None and not_after(tail, max(0, lo - NOT_AFTER_REACH), lo):
            engine.rejected[rule.class_id] = engine.rejected.get(rule.class_id, 0) + 1
            return
        check, normalize = engine._checks[rule_index], engine._normalizers[rule_index]
        size = len(tail)
        for end in ends:
            hi = end - base
            if hi < size and tail[hi] in boundary:
                continue
            if rule.dotted and hi + 1 < size and tail[hi] == 0x2E and tail[hi + 1] in boundary:
                continue                  # "a@b.com.cn" must not also yield "a@b.com"
            value = check(normalize(tail[lo:hi].decode(rule.encoding, "replace")))
            if value is not None:
                self.sink(rule.class_id, value, rule.confidence)
                return
        engine.rejected[rule.class_id] = engine.rejected.get(rule.class_id, 0) + 1

    def _token_start(self, rule: Rule, at: int) -> int:
        """Where the token around the anchor byte at `at` (an index into the tail) starts: at
        most `anchor_reach` boundary bytes before it; -1 when there are none or the token runs
        on beyond that reach."""
        tail, boundary = self._tail, rule.boundary
        lo = at
        while lo > 0 and at - lo < rule.anchor_reach and tail[lo - 1] in boundary:
            lo -= 1
        if lo == at or (lo > 0 and tail[lo - 1] in boundary):
            return -1
        return lo

    def _binary_around(self, start: int, end: int) -> bool:
        """True when the bytes around a candidate look like binary data, not text.

        Random bytes (compressed or encrypted uploads) spell a syntactically valid short address
        such as `I@zn.ml` every few tens of kilobytes; digit classes need 11+ digits and
        checksums, so only the e-mail rule is `text_only`. Text has no C0 control bytes other than
        whitespace, and its non-ASCII bytes are valid UTF-8 (GBK and UTF-16 are transcoded
        before scanning)."""
        tail, base = self._tail, self._base
        lo, hi = max(0, start - base - BINARY_CONTEXT), min(len(tail), end - base + BINARY_CONTEXT)
        context = bytes(tail[lo:hi])
        if context.translate(None, _TEXT_CONTROLS) != context:
            return True
        try:
            context.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut by the window edge is still text.
            return not (exc.start >= len(context) - 3 or exc.end <= 3)
        return False

    def _has_hotword(self, rule_index: int, lo: int) -> bool:
        context = bytes(self._tail[max(0, lo - HOTWORD_REACH):lo]).lower()
        return any(word in context for word in self.engine._hotwords[rule_index])

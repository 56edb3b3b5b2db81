"""The year's cumulative cross-border volume, and the transfer mechanism it calls for.

The PRC 2024 Provisions set thresholds on the number of *persons* whose personal information a
data handler sends abroad since 1 January (cn profile, `[thresholds]`). One flow says little;
the ledger adds up every cross-border flow's findings per counting year (the profile's
calendar) in HyperLogLog sketches of the keyed value digests, so a value sent in a thousand
flows is one person, in fixed memory (4 KiB per class and year), and sketches from several
workers merge exactly.

Persons are estimated per class and the largest class stands for the count: one person may
leave as an ID number, a mobile number and an e-mail address, so summing classes would count
them three times, while the largest class is a lower bound of the persons concerned. Classes
that identify no person by themselves (USCC: companies) do not count. Estimates carry the
sketch's error (1.04/sqrt(4096) = 1.6 %); near a threshold, read them as such.

Across restarts (`LedgerFile`, option `ledger`; under systemd by default the service's state
directory): the sketches are worthless without the key
the value digests were made with (the same person under another key is another person), so
the file holds both, written atomically (0600) every minute by the live agent and at every
stop, and at the end of a replay. A file that cannot be read stops the start: carrying on with
empty counts would understate the year without anyone noticing.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import msgpack

from agent.errors import UsageError
from classifiers.findings import DistinctSketch, Findings
from geo.jurisdiction import Jurisdiction

LEDGER_REGISTERS = 4096
# Built-in classes that identify a natural person (cn_uscc identifies an organisation).
PERSON_CLASSES = frozenset(("cn_resident_id", "cn_passport", "cn_mobile", "email", "payment_card", "iban"))
_IMPORTANT_GRADES = frozenset(("core", "important"))


def counting_year(ts_us: int, zone: str | None) -> int:
    moment = datetime.fromtimestamp(ts_us / 1_000_000, tz=timezone.utc)
    return moment.astimezone(ZoneInfo(zone)).year if zone else moment.year


@dataclass(slots=True)
class TransferLedger:
    """Sketches keyed by (year, class id), plus the years in which important data left."""

    sketches: dict[tuple[int, str], bytearray] = field(default_factory=dict)
    important_years: set[int] = field(default_factory=set)
    beyond: dict[tuple[int, str], int] = field(default_factory=dict)   # estimates past a flow's cap

    def __bool__(self) -> bool:
        return bool(self.sketches) or bool(self.important_years)

    def record(self, year: int, findings: Findings) -> None:
        """Add what one cross-border flow carried out."""
        for class_id, finding in findings.by_class.items():
            pack = findings.packs.get(class_id)
            if pack is not None:
                if pack.grade in _IMPORTANT_GRADES:
                    self.important_years.add(year)
                continue
            if class_id not in PERSON_CLASSES:
                continue
            sketch = self._sketch(year, class_id)
            for digest in finding.digests:
                sketch.add(digest)
            self.sketches[year, class_id] = sketch.registers
            if finding.sketch is not None:
                # Values past the flow's cap are known only as an estimate: added as a number, so
                # those (and only those) are not de-duplicated against other flows.
                self.beyond[year, class_id] = self.beyond.get((year, class_id), 0) + finding.sketch.estimate()

    def merge(self, other: TransferLedger) -> None:
        for key, registers in other.sketches.items():
            mine = self.sketches.get(key)
            self.sketches[key] = bytearray(registers) if mine is None else bytearray(map(max, mine, registers))
        self.important_years |= other.important_years
        for key, extra in other.beyond.items():
            self.beyond[key] = self.beyond.get(key, 0) + extra

    def persons(self, year: int, classes: Iterable[str]) -> int:
        return max((DistinctSketch(self.sketches[year, c]).estimate() + self.beyond.get((year, c), 0)
                    for c in classes if (year, c) in self.sketches), default=0)

    def years(self) -> list[int]:
        return sorted({year for year, _ in self.sketches} | self.important_years)

    def summary(self, year: int, profile: Jurisdiction, sensitivity: dict[str, bool]) -> dict[str, object]:
        """Estimated persons (non-sensitive, sensitive), important data, and the mechanism."""
        sensitive = [c for c in PERSON_CLASSES if sensitivity.get(c, False)]
        nonsensitive = [c for c in PERSON_CLASSES if not sensitivity.get(c, False)]
        counts = {"nonsensitive_persons": self.persons(year, nonsensitive),
                  "sensitive_persons": self.persons(year, sensitive),
                  "important_data": year in self.important_years}
        return {"year": year, **counts, "ciio": profile.ciio,
                "required_mechanism": profile.required_mechanism(counts["nonsensitive_persons"],
                                                                 counts["sensitive_persons"],
                                                                 counts["important_data"])}

    def _sketch(self, year: int, class_id: str) -> DistinctSketch:
        registers = self.sketches.get((year, class_id))
        return DistinctSketch(registers if registers is not None else LEDGER_REGISTERS)



_LEDGER_FORMAT = "egresswatch-ledger"
_LEDGER_VERSION = 1
DIGEST_KEY_BYTES = 16


class LedgerFile:
    """One file holding a `TransferLedger` and the digest key its sketches were made with.

    One writer at a time: `lock()` takes an exclusive lock on FILE.lock for as long as this
    process (and the workers it forks) lives, so a replay given the live agent's ledger is
    refused instead of one of them overwriting the other's counts."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock_fd = -1

    def lock(self) -> None:
        """Take the writer's lock (UsageError when another process holds it), after checking
        that the path can be a ledger at all."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise UsageError(f"cannot use the ledger {self.path}: no directory {directory}")
        if os.path.isdir(self.path):
            raise UsageError(f"cannot use the ledger {self.path}: it is a directory")
        lock_path = self.path + ".lock"
        try:
            # Read-only: whichever user runs the agent next can lock it too (made readable below).
            fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot lock the ledger {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UsageError(f"the ledger {self.path} is in use by another egresswatch (lock {lock_path})") from None
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o644)            # whatever the umask made of it
            _hand_to_directory_owner(fd, directory)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the writer's lock (also released when the process and its workers exit)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def load(self) -> tuple[bytes, TransferLedger]:
        """The key and ledger in the file; a new random key and an empty ledger when there is
        no file yet. UsageError (one line, naming the file) when it cannot be used."""
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return os.urandom(DIGEST_KEY_BYTES), TransferLedger()
        except OSError as exc:
            raise UsageError(f"cannot read the ledger {self.path}: {exc.strerror}") from None
        try:
            return _decode(data)
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise UsageError(f"the ledger {self.path} is damaged ({exc}); move it away to start the year's "
                             "counts again") from None

    def save(self, key: bytes, ledger: TransferLedger) -> None:
        """Atomically: the previous file stays whole until the new one is complete on disk.
        Run as root (a replay by an administrator on the agent's ledger), the file keeps its
        owner, or a new one gets the directory's owner, so the agent can still read it."""
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ledger-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                if os.geteuid() == 0:
                    try:
                        owner = os.stat(self.path)
                    except FileNotFoundError:
                        _hand_to_directory_owner(out.fileno(), directory)
                    else:
                        os.fchown(out.fileno(), owner.st_uid, owner.st_gid)
                out.write(_encode(key, ledger))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)           # the rename itself survives a crash
        finally:
            os.close(dir_fd)

    def check_writable(self) -> None:
        """Before a run that will save: a directory we cannot write is a usage error now, not a
        lost year at the end."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.access(directory, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write the ledger {self.path}: its directory is not writable")


def _hand_to_directory_owner(fd: int, directory: str) -> None:
    """As root, in a directory another user owns (the agent's state directory): give the file
    to that user, so that the agent, started as that user, can open it."""
    if os.geteuid() != 0:
        return
    st = os.stat(directory)
    if st.st_uid != 0:
        os.fchown(fd, st.st_uid, st.st_gid)


def ledger_path(setting: str, *, live: bool) -> str | None:
    """The ledger file a `ledger` setting names: "auto" is, for the live agent, ledger.msgpack in
    the state directory systemd gives the service ($STATE_DIRECTORY), and none elsewhere; a
    replay adds to a ledger only when given one by name (an investigation's capture is not this
    year's traffic by default). "off" (or "") is none."""
    if setting in ("", "off", "none"):
        return None
    if setting != "auto":
        return setting
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0] if live else ""
    return os.path.join(state, "ledger.msgpack") if state else None


def _encode(key: bytes, ledger: TransferLedger) -> bytes:
    return msgpack.packb({
        "format": _LEDGER_FORMAT, "version": _LEDGER_VERSION, "key": key,
        "sketches": [[year, class_id, bytes(registers)] for (year, class_id), registers in sorted(ledger.sketches.items())],
        "beyond": [[year, class_id, count] for (year, class_id), count in sorted(ledger.beyond.items())],
        "important_years": sorted(ledger.important_years),
    }, use_bin_type=True)


def _decode(data: bytes) -> tuple[bytes, TransferLedger]:
    record = msgpack.unpackb(data, raw=False)
    if not isinstance(record, dict) or record.get("format") != _LEDGER_FORMAT:
        raise ValueError("not an egresswatch ledger")
    if record.get("version") != _LEDGER_VERSION:
        raise ValueError(f"ledger version {record.get('version')!r}, this agent reads {_LEDGER_VERSION}")
    key = record["key"]
    if not isinstance(key, bytes) or len(key) != DIGEST_KEY_BYTES:
        raise ValueError("bad digest key")
    ledger = TransferLedger()
    for year, class_id, registers in record["sketches"]:
        if not isinstance(year, int) or not isinstance(class_id, str) or not isinstance(registers, bytes) \
                or len(registers) != LEDGER_REGISTERS or max(registers, default=0) > 64:
            raise ValueError(f"bad sketch for {class_id!r} in {year!r}")
        ledger.sketches[year, class_id] = bytearray(registers)
    for year, class_id, count in record["beyond"]:
        if not isinstance(year, int) or not isinstance(class_id, str) or not isinstance(count, int) or count < 0:
            raise ValueError("bad estimate")
        ledger.beyond[year, class_id] = count
    for year in record["important_years"]:
        if not isinstance(year, int):
            raise ValueError("bad year")
        ledger.important_years.add(year)
    return key, ledger

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
sketch's error (1.04/sqrt(4096) = 1.6 %); near a threshold, read them as such. The ledger lives
in memory: a restarted agent starts the year's counts again (not persisted yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

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


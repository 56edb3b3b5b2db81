"""Per-flow findings: distinct values per class, masked samples, severity; a process-wide memory budget.

Raw values never leave this object: distinct counting keeps a keyed digest of each
normalized value (so even a memory dump of a long-running agent holds no identifiers), and
events get masked samples only. Samples are capped (`max_samples`).

Memory: two limits keep the digests bounded.
- `max_distinct` per class per flow (one huge upload cannot take the whole budget);
- a `FindingsBudget` shared by every live flow of the process (`memory_budget_bytes`, 64 MiB
  by default): each remembered digest is charged `DIGEST_BYTES` (what a 16-byte digest costs
  in a set: 82 to 154 bytes measured with tracemalloc, depending on where the set is in its
  growth cycle; charged at 160 so the budget is an upper bound), and a flow gives its bytes
  back when it ends (`release()`). A flood of flows each carrying many values therefore stops
  growing memory at the budget, whatever the number of flows. What a flow costs before its
  first value (a few hundred bytes per class seen) is bounded by the flow table's size, like
  every other per-flow structure.

What happens when a limit bites. Dropping the values would make a bulk export look small,
and counting every occurrence would count a value sent twice twice, so neither is what an
analyst wants from "how many people's IDs left in this flow". Instead, a value that cannot be
remembered is still checked against the digests already held (exact for those), and if it is
not one of them it goes into a small HyperLogLog sketch for its class (256 one-byte registers,
`SKETCH_BYTES` charged once; standard error 1.04/16 = 6.5 %, near-exact below ~100 values by
linear counting). The event then says `count` = exact remembered + sketch estimate (the best
figure for thresholds such as "bulk" or the PIPL 10,000 / 100,000 person bands), `capped`:
true, and `count_min` = the exact number of distinct values remembered (a hard lower bound).
Severity uses the estimate. Each limit is counted once per class and flow when it first bites:
`limit.findings_distinct` (per-class cap) and `limit.findings_memory` (the process budget).
Sketch registers are hash-derived bits, not values: they reveal nothing about identifiers.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from classifiers.classes import CLASS_BY_ID
from classifiers.normalize import MASKERS
from classifiers.rulepacks import PackClass

SEVERITY_HIGH = 1          # EVE convention: 1 is the most severe
SEVERITY_MEDIUM = 2
SEVERITY_LOW = 3
_GRADE_SEVERITY = {"core": SEVERITY_HIGH, "important": SEVERITY_MEDIUM, "general": SEVERITY_LOW}

DIGEST_BYTES = 160                     # one 16-byte digest in a set (object + table slots), upper bound
SKETCH_REGISTERS = 256                 # HyperLogLog registers per overflowing class (power of two)
SKETCH_BYTES = sys.getsizeof(bytearray(SKETCH_REGISTERS))
DEFAULT_MEMORY_BUDGET = 64 << 20


@dataclass(frozen=True, slots=True)
class FindingLimits:
    max_distinct: int = 100_000     # distinct values remembered per class per flow
    max_samples: int = 3            # masked samples per class in events
    bulk_threshold: int = 100       # distinct values from which a class counts as "bulk"
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET   # digests held across all live flows of the process


class FindingsBudget:
    """Bytes of digests held by all live `Findings` of one process (single-threaded use).

    `anomalies` receives `limit.findings_memory`; without one the budget keeps its own Counter.
    """

    __slots__ = ("max_bytes", "used", "anomalies")

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_BUDGET,
                 anomalies: Counter[str] | None = None) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.anomalies: Counter[str] = Counter() if anomalies is None else anomalies

    def take(self, nbytes: int) -> bool:
        """Reserve nbytes if they fit under the budget."""
        if self.used + nbytes > self.max_bytes:
            return False
        self.used += nbytes
        return True

    def charge(self, nbytes: int) -> None:
        """Account for memory that is held whatever the budget says (a sketch: fixed and small)."""
        self.used += nbytes

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes


# Used by Findings created without a budget (tools, tests, older callers): still one per process.
PROCESS_BUDGET = FindingsBudget()


class DistinctSketch:
    """HyperLogLog over keyed digests (uniform bytes): an estimate of distinct values in fixed
    memory, mergeable by taking register maxima (across flows, workers and runs)."""

    __slots__ = ("registers", "_index_bits", "_alpha")

    def __init__(self, registers: int | bytearray = SKETCH_REGISTERS) -> None:
        self.registers = bytearray(registers) if isinstance(registers, int) else registers
        m = len(self.registers)
        if m < 16 or m & (m - 1):
            raise ValueError("a sketch needs a power of two of at least 16 registers")
        self._index_bits = m.bit_length() - 1
        self._alpha = 0.7213 / (1 + 1.079 / m)

    def add(self, digest: bytes) -> None:
        x = int.from_bytes(digest[:8], "little")
        index = x & (len(self.registers) - 1)
        rest = x >> self._index_bits
        rank = 64 - self._index_bits - rest.bit_length() + 1     # position of the first 1 bit
        if rank > self.registers[index]:
            self.registers[index] = rank

    def merge(self, other: DistinctSketch) -> None:
        self.registers = bytearray(map(max, self.registers, other.registers))

    def estimate(self) -> int:
        registers = self.registers
        m = len(registers)
        zeros = registers.count(0)
        if zeros == m:
            return 0
        raw = self._alpha * m * m / sum(2.0 ** -r for r in registers)
        if raw <= 2.5 * m and zeros:
            return round(m * math.log(m / zeros))            # linear counting: small cardinalities
        return round(raw)


@dataclass(slots=True)
class ClassFinding:
    digests: set[bytes] = field(default_factory=set)
    samples: list[str] = field(default_factory=list)
    low_confidence: int = 0
    capped: bool = False                  # some distinct values were not remembered
    sketch: DistinctSketch | None = None         # estimates those values once `capped`

    def count(self) -> int:
        """Best figure for distinct values: exact when not capped, exact + estimate beyond."""
        exact = len(self.digests)
        if self.sketch is None:
            return exact
        return exact + max(1, self.sketch.estimate())


class Findings:
    """What one flow sent (in its export direction), by class."""

    __slots__ = ("limits", "sensitivity", "key", "packs", "by_class", "changed", "budget", "held")

    def __init__(self, limits: FindingLimits, sensitivity: dict[str, bool], key: bytes,
                 packs: dict[str, PackClass] | None = None, budget: FindingsBudget | None = None) -> None:
        self.limits = limits
        self.sensitivity = sensitivity
        self.packs = packs or {}            # important-data classes from rule packs
        self.key = key                      # per-process random key for the digests
        self.by_class: dict[str, ClassFinding] = {}
        self.changed = False
        self.budget = PROCESS_BUDGET if budget is None else budget
        self.held = 0                       # bytes charged to the budget by this flow

    def add(self, class_id: str, value: str, confidence: str) -> None:
        finding = self.by_class.get(class_id)
        if finding is None:
            finding = self.by_class[class_id] = ClassFinding()
        digest = hashlib.blake2b(value.encode(), key=self.key, digest_size=16).digest()
        if digest in finding.digests:
            return
        if len(finding.digests) >= self.limits.max_distinct:
            self._overflow(finding, digest, "limit.findings_distinct")
            return
        if not self.budget.take(DIGEST_BYTES):
            self._overflow(finding, digest, "limit.findings_memory")
            return
        self.held += DIGEST_BYTES
        finding.digests.add(digest)
        if confidence == "low":
            finding.low_confidence += 1
        if len(finding.samples) < self.limits.max_samples:
            finding.samples.append(self._sample(class_id, value))
        self.changed = True

    def _overflow(self, finding: ClassFinding, digest: bytes, anomaly: str) -> None:
        """A new distinct value that cannot be remembered: estimate it (see the module docstring)."""
        sketch = finding.sketch
        if sketch is None:
            sketch = finding.sketch = DistinctSketch()
            finding.capped = True
            self.budget.charge(SKETCH_BYTES)
            self.held += SKETCH_BYTES
            self.budget.anomalies[anomaly] += 1
            self.changed = True
        sketch.add(digest)

    def release(self) -> None:
        """The flow is over and its last event written: give its memory back to the budget.

        The digests and sketches are dropped too (counts read afterwards are 0)."""
        if self.held:
            self.budget.give_back(self.held)
            self.held = 0
        for finding in self.by_class.values():
            finding.digests = set()
            finding.sketch = None

    def __del__(self) -> None:
        # Safety net for callers that never call release(): a forgotten flow must not shrink
        # the budget of every later flow for the life of the process.
        if self.held:
            self.budget.give_back(self.held)
            self.held = 0

    def _sample(self, class_id: str, value: str) -> str:
        masker = MASKERS.get(class_id)
        if masker is not None:
            return masker(value)
        pack = self.packs.get(class_id)
        if pack is not None and pack.kind != "regex":
            return value                   # the organisation's own term or marking, not personal data
        return value[:2] + "*" * max(len(value) - 4, 1) + value[-2:] if len(value) > 4 else "*" * len(value)

    def __bool__(self) -> bool:
        return bool(self.by_class)

    def count(self, class_id: str) -> int:
        finding = self.by_class.get(class_id)
        return finding.count() if finding else 0

    def severity(self) -> int:
        """1 high: sensitive class in bulk, or core data; 2 medium: sensitive or bulk, or important
        data; 3 low: anything else."""
        worst = SEVERITY_LOW
        for class_id, finding in self.by_class.items():
            pack = self.packs.get(class_id)
            if pack is not None:
                worst = min(worst, _GRADE_SEVERITY[pack.grade])
                continue
            sensitive = self.sensitivity.get(class_id, False)
            bulk = finding.count() >= self.limits.bulk_threshold
            if sensitive and bulk:
                return SEVERITY_HIGH
            if sensitive or bulk:
                worst = min(worst, SEVERITY_MEDIUM)
        return worst

    def event_fields(self) -> dict[str, Any]:
        matches = []
        for class_id in sorted(self.by_class):
            finding = self.by_class[class_id]
            pack = self.packs.get(class_id)
            entry: dict[str, Any] = {
                "class": class_id,
                "category": pack.info.category if pack else CLASS_BY_ID[class_id].category,
                "sensitive": self.sensitivity.get(class_id, False),
            }
            if pack is not None:
                entry["grade"] = pack.grade
            entry["count"] = finding.count()
            entry["samples"] = list(finding.samples)
            if finding.low_confidence:
                entry["low_confidence"] = finding.low_confidence
            if finding.capped:
                entry["capped"] = True
                entry["count_min"] = len(finding.digests)
            matches.append(entry)
        return {"severity": self.severity(), "matches": matches}

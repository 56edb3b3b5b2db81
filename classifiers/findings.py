"""Per-flow findings: distinct values per class, masked samples, severity.

Raw values never leave this object: distinct counting keeps a keyed digest of each
normalized value (so even a memory dump of a long-running agent holds no identifiers), and
events get masked samples only. Both are capped (`max_distinct`, `max_samples`) and the cap is
counted when it bites.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from classifiers.classes import CLASS_BY_ID
from classifiers.normalize import MASKERS
from classifiers.rulepacks import PackClass

SEVERITY_HIGH = 1          # EVE convention: 1 is the most severe
SEVERITY_MEDIUM = 2
SEVERITY_LOW = 3
_GRADE_SEVERITY = {"core": SEVERITY_HIGH, "important": SEVERITY_MEDIUM, "general": SEVERITY_LOW}


@dataclass(frozen=True, slots=True)
class FindingLimits:
    max_distinct: int = 100_000     # distinct values remembered per class per flow
    max_samples: int = 3            # masked samples per class in events
    bulk_threshold: int = 100       # distinct values from which a class counts as "bulk"


@dataclass(slots=True)
class ClassFinding:
    digests: set[bytes] = field(default_factory=set)
    samples: list[str] = field(default_factory=list)
    low_confidence: int = 0
    capped: bool = False


class Findings:
    """What one flow sent (in its export direction), by class."""

    __slots__ = ("limits", "sensitivity", "key", "packs", "by_class", "changed")

    def __init__(self, limits: FindingLimits, sensitivity: dict[str, bool], key: bytes,
                 packs: dict[str, PackClass] | None = None) -> None:
        self.limits = limits
        self.sensitivity = sensitivity
        self.packs = packs or {}            # important-data classes from rule packs
        self.key = key                      # per-process random key for the digests
        self.by_class: dict[str, ClassFinding] = {}
        self.changed = False

    def add(self, class_id: str, value: str, confidence: str) -> None:
        finding = self.by_class.get(class_id)
        if finding is None:
            finding = self.by_class[class_id] = ClassFinding()
        digest = hashlib.blake2b(value.encode(), key=self.key, digest_size=16).digest()
        if digest in finding.digests:
            return
        if len(finding.digests) >= self.limits.max_distinct:
            finding.capped = True
            return
        finding.digests.add(digest)
        if confidence == "low":
            finding.low_confidence += 1
        if len(finding.samples) < self.limits.max_samples:
            finding.samples.append(self._sample(class_id, value))
        self.changed = True

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
        return len(finding.digests) if finding else 0

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
            bulk = len(finding.digests) >= self.limits.bulk_threshold
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
            entry["count"] = len(finding.digests)
            entry["samples"] = list(finding.samples)
            if finding.low_confidence:
                entry["low_confidence"] = finding.low_confidence
            if finding.capped:
                entry["capped"] = True
            matches.append(entry)
        return {"severity": self.severity(), "matches": matches}

"""Jurisdiction profiles: which countries are "home", and which volumes need which transfer
mechanism, read from data files in geo/profiles/.

A profile is a TOML file: `name`, `label`, `home`, optional `adequate` and
`adequate_if_recipient_qualifies`, optional `ciio` (the operator is a critical information
infrastructure operator) and an optional `[thresholds]` table:

    [thresholds]
    source = "..."                  # the instrument, its date and where to read it
    window = "calendar_year"        # counts are cumulative since 1 January ...
    timezone = "Asia/Shanghai"      # ... of this calendar
    rules = [{ count = "sensitive_persons", at_least = 1, mechanism = "standard_contract_or_certification",
               article = "Art. 8" }, ...]
    ciio_rules = [...]              # replaces `rules` when the ciio switch is on

A rule says: once the year's count reaches `at_least`, `mechanism` is required. The strongest
mechanism any rule triggers is the answer of `required_mechanism`. A profile without thresholds
(`eea`: GDPR Chapter V judges each transfer on adequacy or safeguards, not on volume) always
answers "none". `--home CC,...` replaces the home set of the chosen profile.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import UsageError
from geo.resolver import SPECIAL, UNKNOWN

PROFILES_DIR = Path(__file__).parent / "profiles"

# Weakest first: `required_mechanism` answers the strongest one triggered.
MECHANISMS = ("none", "standard_contract_or_certification", "security_assessment")
COUNTS = ("nonsensitive_persons", "sensitive_persons", "important_data")
_RANK = {name: rank for rank, name in enumerate(MECHANISMS)}
_RULE_KEYS = frozenset(("count", "at_least", "mechanism", "article"))
_THRESHOLD_KEYS = frozenset(("source", "window", "timezone", "rules", "ciio_rules"))


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    count: str                  # one of COUNTS
    at_least: int               # the rule applies from this count on (inclusive)
    mechanism: str              # one of MECHANISMS
    article: str = ""           # where the instrument says so


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    name: str
    label: str                              # what events say for a home-country address
    home: frozenset[str]
    adequate: frozenset[str] = frozenset()
    adequate_if_qualifies: frozenset[str] = frozenset()
    ciio: bool = False                      # critical information infrastructure operator
    rules: tuple[ThresholdRule, ...] = ()
    ciio_rules: tuple[ThresholdRule, ...] = ()
    thresholds_source: str | None = None
    counting_timezone: str | None = None    # whose 1 January starts the counting year

    def of(self, country: str) -> str:
        """The jurisdiction of a country: the profile's label at home, else the country code."""
        return self.label if country in self.home else country

    def cross_border(self, country: str) -> bool | None:
        """True abroad, False at home or for special-purpose addresses, None when unknown."""
        if country == SPECIAL or country in self.home:
            return False
        if country == UNKNOWN:
            return None
        return True

    def with_home(self, home: tuple[str, ...]) -> Jurisdiction:
        return dataclasses.replace(self, label=",".join(home), home=frozenset(home))

    def with_ciio(self, ciio: bool) -> Jurisdiction:
        """The same profile for a CIIO (or not); only profiles with CIIO rules know the switch."""
        if ciio and not self.ciio_rules:
            raise UsageError(f"jurisdiction profile {self.name} has no CIIO rules; the CIIO switch applies to "
                             "profiles that define [thresholds] ciio_rules (cn)")
        return dataclasses.replace(self, ciio=ciio)

    @property
    def active_rules(self) -> tuple[ThresholdRule, ...]:
        """The rules in force: the CIIO rules when the switch is on."""
        return self.ciio_rules if self.ciio else self.rules

    def required_mechanism(self, nonsensitive_persons: int, sensitive_persons: int, important_data: bool) -> str:
        """The transfer mechanism the year's cumulative counts call for: "none",
        "standard_contract_or_certification" or "security_assessment"."""
        if nonsensitive_persons < 0 or sensitive_persons < 0:
            raise ValueError("person counts cannot be negative")
        counts = {"nonsensitive_persons": nonsensitive_persons, "sensitive_persons": sensitive_persons,
                  "important_data": 1 if important_data else 0}
        rank = 0
        for rule in self.active_rules:
            if counts[rule.count] >= rule.at_least and _RANK[rule.mechanism] > rank:
                rank = _RANK[rule.mechanism]
        return MECHANISMS[rank]


def load_profile(name_or_path: str) -> Jurisdiction:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise UsageError(f"jurisdiction profile not found: {name_or_path} (built in: {known})") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read jurisdiction profile {path}: {exc}") from None
    try:
        profile = Jurisdiction(str(data["name"]), str(data["label"]), frozenset(data["home"]),
                               frozenset(data.get("adequate", ())),
                               frozenset(data.get("adequate_if_recipient_qualifies", ())))
    except (KeyError, TypeError) as exc:
        raise UsageError(f"jurisdiction profile {path} needs name, label and home: {exc}") from None
    ciio = data.get("ciio", False)
    if not isinstance(ciio, bool):
        raise UsageError(f"jurisdiction profile {path}: ciio must be true or false, got {ciio!r}")
    thresholds = data.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise UsageError(f"jurisdiction profile {path}: [thresholds] must be a table")
    unknown = sorted(set(thresholds) - _THRESHOLD_KEYS)
    if unknown:
        raise UsageError(f"jurisdiction profile {path}: unknown key thresholds.{unknown[0]} "
                         f"(known: {', '.join(sorted(_THRESHOLD_KEYS))})")
    rules = _rules(thresholds.get("rules", []), path, "rules")
    ciio_rules = _rules(thresholds.get("ciio_rules", []), path, "ciio_rules")
    if ciio and not ciio_rules:
        raise UsageError(f"jurisdiction profile {path}: ciio = true needs [thresholds] ciio_rules")
    source = thresholds.get("source")
    zone = thresholds.get("timezone")
    return dataclasses.replace(profile, ciio=ciio, rules=rules, ciio_rules=ciio_rules,
                               thresholds_source=None if source is None else str(source),
                               counting_timezone=None if zone is None else str(zone))


def _rules(items: Any, path: Path, key: str) -> tuple[ThresholdRule, ...]:
    if not isinstance(items, list):
        raise UsageError(f"jurisdiction profile {path}: thresholds.{key} must be a list of rules")
    rules = []
    for number, item in enumerate(items, 1):
        where = f"jurisdiction profile {path}: thresholds.{key} rule {number}"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: a rule is a table {{count, at_least, mechanism, article}}")
        extra = sorted(set(item) - _RULE_KEYS)
        if extra:
            raise UsageError(f"{where}: unknown key {extra[0]} (known: {', '.join(sorted(_RULE_KEYS))})")
        count, at_least, mechanism = item.get("count"), item.get("at_least"), item.get("mechanism")
        if count not in COUNTS:
            raise UsageError(f"{where}: count must be one of {', '.join(COUNTS)}, got {count!r}")
        if type(at_least) is not int or at_least < 1:
            raise UsageError(f"{where}: at_least must be a whole number >= 1, got {at_least!r}")
        if mechanism not in MECHANISMS[1:]:
            raise UsageError(f"{where}: mechanism must be one of {', '.join(MECHANISMS[1:])}, got {mechanism!r}")
        rules.append(ThresholdRule(count, at_least, mechanism, str(item.get("article", ""))))
    return tuple(rules)

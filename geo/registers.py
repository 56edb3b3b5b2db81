"""Destination register: which destinations have a legal basis for transfers, which are forbidden.

The operator keeps a YAML file (schema `version: 1`, example in deploy/registers.example.yaml):

    version: 1
    timezone: Asia/Shanghai          # whose calendar dates are (default UTC)
    destinations:
      - name: payroll-provider       # required, unique; events name the entry by it
        hosts: [payroll.example.com, "*.payroll.example.com"]
        cidrs: [203.0.113.0/24, "2001:db8:10::/48"]
        recipient: Example Payroll GmbH          # optional
        note: SCC filed with the Shanghai CAC     # optional
        basis: standard_contract
        filed: 2024-05-10            # in force from this date ...
        effective: 2024-05-02        # ... or from the day the contract took effect, if earlier
        expires: 2027-05-09          # optional
      - name: art42-listed
        hosts: ["*.blocked.example"]
        deny: true
        reason: PIPL Art. 42 list, CAC notice 2025-07

Bases and their dates (all calendar dates YYYY-MM-DD; a basis covers whole days, from the
start of its first day to the end of its last, in the register's time zone):
  standard_contract    filed (required), effective (optional), expires (optional)
  security_assessment  approved (required), valid_until (required)
  certification        valid_until (required), issued (optional)
  exemption            reason (required, one of EXEMPTIONS), valid_until (optional)
A `deny: true` entry has a free-text `reason` and no basis.

Matching. `hosts` are exact names or `*.suffix` wildcards; a wildcard matches sub-domains at
any depth (`*.example.com` matches `a.example.com` and `a.b.example.com`) but not the apex
`example.com` itself: list the apex as well to cover it. Names are compared case-insensitively
without a trailing dot; non-ASCII names are turned into their IDNA (xn--) form. `cidrs` are IPv4
or IPv6 networks (host bits must be zero). When several entries match a flow, a deny entry wins
over everything; otherwise the most specific entry: an exact host, then the wildcard with the
longest suffix, then the CIDR with the longest prefix (ties: the hostname given first).

Status of the match at the packet's time (`at_us`, so a replayed capture is judged at its own
date): `covered` inside the basis's dates, `expired` after them, `none` before they start or
when nothing matches, `denied` for a deny entry. Every mistake in the file is one UsageError
naming the file and the entry; nothing is half-loaded.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from agent.errors import UsageError

SCHEMA_VERSION = 1

BASES = ("standard_contract", "security_assessment", "certification", "exemption")

# Exemption reasons: PRC 2024 Provisions on Promoting and Regulating Cross-Border Data Flows
# (CAC, 22 March 2024) Arts. 3-6, and GDPR Art. 49(1) derogations. Purpose-based: the sensor
# cannot see them on the wire, so the operator states them per destination.
EXEMPTIONS = (
    "no_personal_data",          # PRC Art. 3: trade, transport, academic, manufacturing data without PI
    "foreign_data_returned",     # PRC Art. 4: PI collected abroad, processed here and sent back
    "contract_necessity",        # PRC Art. 5(1); GDPR Art. 49(1)(b)/(c)
    "hr_management",             # PRC Art. 5(2): cross-border HR under lawful labour rules
    "emergency",                 # PRC Art. 5(3): life, health, property
    "small_volume",              # PRC Art. 5(4): non-CIIO, < 100,000 persons' non-sensitive PI this year
    "free_trade_zone",           # PRC Art. 6: outside a pilot FTZ's negative list
    "explicit_consent",          # GDPR Art. 49(1)(a)
    "public_interest",           # GDPR Art. 49(1)(d)
    "legal_claims",              # GDPR Art. 49(1)(e)
    "vital_interests",           # GDPR Art. 49(1)(f)
    "public_register",           # GDPR Art. 49(1)(g)
    "compelling_legitimate_interests",  # GDPR Art. 49(1) second subparagraph
)

# Per basis: required date keys, optional date keys. The first of "start" keys present starts
# coverage (`effective` before `filed`); the "end" key ends it.
_DATES = {
    "standard_contract": (("filed",), ("effective", "expires")),
    "security_assessment": (("approved", "valid_until"), ()),
    "certification": (("valid_until",), ("issued",)),
    "exemption": ((), ("valid_until",)),
}
_START_KEYS = ("effective", "filed", "approved", "issued")
_END_KEYS = ("expires", "valid_until")
_COMMON_KEYS = frozenset(("name", "hosts", "cidrs", "recipient", "note"))
_TOP_KEYS = frozenset(("version", "timezone", "destinations"))
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
_NEVER = 1 << 62                       # "no end date", in µs: past any packet time
_CACHE_SIZE = 65_536
_MAPPED_V4 = b"\0" * 10 + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class Transfer:
    """What the register says about one flow's destination at the flow's time."""

    basis: str | None                 # one of BASES, or None (no entry, or a deny entry)
    valid_until: str | None           # ISO date the basis ends (inclusive), None when open-ended
    status: str                       # "covered" | "expired" | "none" | "denied"
    entry: str | None                 # the matching entry's name
    reason: str | None = None         # deny reason, or exemption reason

    def event_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"basis": self.basis, "valid_until": self.valid_until, "status": self.status}
        if self.entry is not None:
            fields["entry"] = self.entry
        if self.reason is not None:
            fields["reason"] = self.reason
        return fields


NO_TRANSFER = Transfer(None, None, "none", None)


class _Entry:
    """One register entry with its three possible answers built once."""

    __slots__ = ("name", "deny", "start_us", "end_us", "covered", "expired", "not_yet")

    def __init__(self, name: str, basis: str | None, reason: str | None, start_us: int, end_us: int,
                 valid_until: str | None) -> None:
        self.name = name
        self.deny = basis is None
        self.start_us = start_us
        self.end_us = end_us
        if self.deny:
            self.covered = self.expired = self.not_yet = Transfer(None, None, "denied", name, reason)
        else:
            self.covered = Transfer(basis, valid_until, "covered", name, reason)
            self.expired = Transfer(basis, valid_until, "expired", name, reason)
            self.not_yet = Transfer(basis, valid_until, "none", name, reason)

    def at(self, at_us: int) -> Transfer:
        if at_us < self.start_us:
            return self.not_yet
        if at_us >= self.end_us:
            return self.expired
        return self.covered


class Register:
    """Lookups of destinations in a loaded register; immutable once built (swap to reload)."""

    def __init__(self, entries: Sequence[tuple[_Entry, Sequence[str], Sequence[str]]] = (),
                 source: str | None = None, timezone: str = "UTC") -> None:
        """`entries`: (entry, normalised hosts, CIDR strings); `load_register` builds them."""
        self.source = source
        self.timezone = timezone
        self.size = len(entries)
        self._exact: dict[str, _Entry] = {}
        self._wild: dict[str, _Entry] = {}          # suffix without "*." -> entry
        v4: dict[int, dict[int, _Entry]] = {}
        v6: dict[int, dict[int, _Entry]] = {}
        for entry, hosts, cidrs in entries:
            for host in hosts:
                if host.startswith("*."):
                    self._wild[host[2:]] = entry
                else:
                    self._exact[host] = entry
            for cidr in cidrs:
                net = ipaddress.ip_network(cidr)
                table = v4 if net.version == 4 else v6
                table.setdefault(net.prefixlen, {})[int(net.network_address)] = entry
        # Longest prefix first: the first non-deny hit is the most specific CIDR.
        self._v4 = [(_mask(32, p), nets) for p, nets in sorted(v4.items(), reverse=True)]
        self._v6 = [(_mask(128, p), nets) for p, nets in sorted(v6.items(), reverse=True)]
        self._wild_deny = any(e.deny for e in self._wild.values())
        self._cache: dict[tuple[bytes, tuple[str, ...]], _Entry | None] = {}

    @classmethod
    def empty(cls) -> Register:
        return cls()

    def __len__(self) -> int:
        return self.size

    @property
    def matches_names(self) -> bool:
        """Whether any entry names hosts: otherwise hostnames (SNI, Host, passive DNS) change no answer."""
        return bool(self._exact or self._wild)

    def lookup(self, ip: bytes, hostnames: Sequence[str], at_us: int) -> Transfer:
        """The transfer status for a destination address (packed, 4 or 16 bytes) known by
        these hostnames at packet time (the caller decides which names it trusts, see
        `Pipeline._transfer`)."""
        if not self.size:
            return NO_TRANSFER
        key = (ip, hostnames if type(hostnames) is tuple else tuple(hostnames))
        cache = self._cache
        try:
            entry = cache[key]
        except KeyError:
            entry = self._match(ip, key[1])
            if len(cache) >= _CACHE_SIZE:
                del cache[next(iter(cache))]    # oldest first: cheap, and good enough per flow
            cache[key] = entry
        return NO_TRANSFER if entry is None else entry.at(at_us)

    def _match(self, ip: bytes, hostnames: tuple[str, ...]) -> _Entry | None:
        exact = wild = None
        wild_len = -1
        for raw in hostnames:
            if not raw:
                continue
            host = raw.lower().rstrip(".")
            entry = self._exact.get(host)
            if entry is not None:
                if entry.deny:
                    return entry
                if exact is None:
                    exact = entry
            # Suffixes longest first; without wildcard denies the first hit is the answer.
            dot = host.find(".")
            while dot >= 0:
                suffix = host[dot + 1:]
                entry = self._wild.get(suffix)
                if entry is not None:
                    if entry.deny:
                        return entry
                    if len(suffix) > wild_len:
                        wild, wild_len = entry, len(suffix)
                    if not self._wild_deny:
                        break
                dot = host.find(".", dot + 1)
        cidr = None
        if len(ip) == 16 and ip[:12] == _MAPPED_V4:
            ip = ip[12:]
        value = int.from_bytes(ip, "big")
        for mask, nets in self._v4 if len(ip) == 4 else self._v6:
            entry = nets.get(value & mask)
            if entry is not None:
                if entry.deny:
                    return entry
                if cidr is None:
                    cidr = entry
        return exact or wild or cidr


def _mask(bits: int, prefix: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)


# -- loading -----------------------------------------------------------------------------------

def load_register(path: str | Path) -> Register:
    """Read and validate a register file; a new Register, or UsageError (one line) naming the
    file and the entry. The caller swaps the result in, so a bad edit never half-applies."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"destination register not found: {where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read destination register {where}: {exc}") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except ValueError as exc:                 # a constructor's complaint, e.g. 2024-02-30
        raise UsageError(f"{where}: not valid YAML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UsageError(f"{where}: not valid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where}: a register is a mapping with version: {SCHEMA_VERSION} and destinations: [...]")
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    if data.get("version") != SCHEMA_VERSION:
        raise UsageError(f"{where}: version must be {SCHEMA_VERSION}, got {data.get('version')!r}")
    zone_name = data.get("timezone", "UTC")
    try:
        zone = ZoneInfo(str(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"{where}: unknown timezone {zone_name!r} (an IANA name like Asia/Shanghai or UTC)") from None
    items = data.get("destinations")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise UsageError(f"{where}: destinations must be a list of entries")
    entries = []
    names: set[str] = set()
    owners: dict[str, str] = {}              # host or CIDR -> entry name, to refuse duplicates
    for number, item in enumerate(items, 1):
        entry, hosts, cidrs = _entry(item, number, where, zone)
        label = f"{where}: entry {number} ({entry.name!r})"
        if entry.name in names:
            raise UsageError(f"{label}: the name is used by an earlier entry")
        names.add(entry.name)
        for key in (*hosts, *cidrs):
            if key in owners:
                raise UsageError(f"{label}: {key} is already listed by entry {owners[key]!r}")
            owners[key] = entry.name
        entries.append((entry, hosts, cidrs))
    return Register(entries, source=where, timezone=str(zone_name))


def _entry(item: Any, number: int, where: str, zone: ZoneInfo) -> tuple[_Entry, list[str], list[str]]:
    if not isinstance(item, dict):
        raise UsageError(f"{where}: entry {number}: each destination is a mapping with name, hosts/cidrs and a basis")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{where}: entry {number}: needs a name")
    label = f"{where}: entry {number} ({name!r})"

    def fail(problem: str) -> UsageError:
        return UsageError(f"{label}: {problem}")

    hosts = [_host(h, fail) for h in _strings(item.get("hosts"), "hosts", fail)]
    cidrs = [_cidr(c, fail) for c in _strings(item.get("cidrs"), "cidrs", fail)]
    if not hosts and not cidrs:
        raise fail("needs hosts or cidrs")
    for key in ("recipient", "note"):
        if key in item and not isinstance(item[key], str):
            raise fail(f"{key} must be text")
    deny = item.get("deny", False)
    basis = item.get("basis")
    if "deny" in item:
        if deny is not True:
            raise fail("deny must be true (leave it out for an allowed destination)")
        if basis is not None:
            raise fail("a deny entry has no basis")
        allowed = _COMMON_KEYS | {"deny", "reason"}
        _no_extra(item, allowed, "a deny entry", fail)
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise fail("a deny entry needs a reason (e.g. PIPL Art. 42 list)")
        return _Entry(name, None, reason.strip(), 0, _NEVER, None), hosts, cidrs
    if basis not in BASES:
        raise fail(f"needs basis: one of {', '.join(BASES)} (or deny: true), got {basis!r}")
    required, optional = _DATES[basis]
    extra_keys = {"reason"} if basis == "exemption" else set()
    _no_extra(item, _COMMON_KEYS | {"basis"} | set(required) | set(optional) | extra_keys, basis, fail)
    dates: dict[str, date] = {}
    for key in required:
        if key not in item:
            raise fail(f"{basis} needs {key}: YYYY-MM-DD")
    for key in (*required, *optional):
        if key in item:
            dates[key] = _date(item[key], key, fail)
    reason = None
    if basis == "exemption":
        reason = item.get("reason")
        if reason not in EXEMPTIONS:
            raise fail(f"exemption needs reason: one of {', '.join(EXEMPTIONS)}, got {reason!r}")
    start = next((dates[k] for k in _START_KEYS if k in dates), None)
    end = next((dates[k] for k in _END_KEYS if k in dates), None)
    for key in _START_KEYS:
        if key in dates and end is not None and dates[key] > end:
            raise fail(f"{key} {dates[key]} is after the end date {end}")
    start_us = _day_start_us(start, zone) if start is not None else -_NEVER
    end_us = _day_start_us(end + timedelta(days=1), zone) if end is not None else _NEVER
    return _Entry(name, basis, reason, start_us, end_us, end.isoformat() if end else None), hosts, cidrs


def _strings(value: Any, key: str, fail: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise fail(f"{key} must be a string or a list of strings")


def _no_extra(item: dict, allowed: set[str] | frozenset[str], what: str, fail: Any) -> None:
    for key in item:
        if key not in allowed:
            raise fail(f"{key!r} does not apply to {what} (allowed: {', '.join(sorted(allowed))})")


def _host(text: str, fail: Any) -> str:
    host = text.strip().lower().rstrip(".")
    wildcard = host.startswith("*.")
    body = host[2:] if wildcard else host
    if not body.isascii():
        try:
            body = body.encode("idna").decode("ascii")
        except UnicodeError:
            raise fail(f"host {text!r} is not a valid internationalised name") from None
    labels = body.split(".")
    if len(body) > 253 or not all(_LABEL.match(label) for label in labels):
        hint = " (a wildcard is only a leading '*.')" if "*" in body else ""
        raise fail(f"host {text!r} is not a hostname{hint}")
    return f"*.{body}" if wildcard else body


def _cidr(text: str, fail: Any) -> str:
    try:
        return str(ipaddress.ip_network(text.strip()))
    except ValueError as exc:
        raise fail(f"bad CIDR {text!r}: {exc}") from None


def _date(value: Any, key: str, fail: Any) -> date:
    # YAML reads an unquoted 2024-05-10 as a date already; a quoted one arrives as text.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise fail(f"{key} must be a date YYYY-MM-DD, got {value!r}")


@lru_cache(maxsize=4096)          # registers repeat the same few dates many times
def _day_start_us(day: date, zone: ZoneInfo) -> int:
    """Microseconds since the epoch at 00:00 of `day` in `zone`."""
    moment = datetime(day.year, day.month, day.day, tzinfo=zone)
    return (moment - _EPOCH) // timedelta(microseconds=1)

"""Rule packs: the organisation's own important-data rules, as YAML files (schema v1).

```yaml
name: acme-important-data          # required
version: 1                         # schema version; only 1 exists
rules:
  - id: project_codenames          # class id: snake_case, unique across packs and built-ins
    kind: terms                    # terms | regex | marking
    grade: important               # core | important | general (GB/T 43697-2024 grading)
    description: Codenames of unreleased projects
    terms: [天河工程, Project Aurora]   # and/or terms_file: codenames.txt (one term a line,
    caseless: true                 #   relative to the pack file); matched in UTF-8 and GBK
  - id: state_secret_marking
    kind: marking                  # the built-in 绝密/机密/秘密 ★ period markings
    grade: core
  - id: internal_ticket
    kind: regex                    # a Hyperscan regex (no lookaround, no backreferences)
    pattern: 'TICKET-[0-9]{6}'
    grade: general
```

Terms and markings are matched as literals encoded in both UTF-8 and GBK (the two encodings
Chinese documents leave a network in); user regexes are matched on the bytes as written (UTF-8).
Values of these classes are the organisation's own terms, not personal data, so events show
them as they are (a regex class is masked like a generic identifier).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.errors import UsageError
from classifiers.classes import ALNUM, CLASS_BY_ID, ClassInfo, Rule

GRADES = ("core", "important", "general")
KINDS = ("terms", "regex", "marking")
_ID = re.compile(r"[a-z][a-z0-9_]{1,63}")
MAX_TERMS = 200_000
# GB/T 7156-style classification marks: level, star, period ("机密★10年", "秘密★6个月", "绝密★长期").
_MARKING_TERMS = tuple(f"{level}{star}" for level in ("绝密", "机密", "秘密") for star in ("★", "☆", "*"))


@dataclass(frozen=True, slots=True)
class PackClass:
    info: ClassInfo
    grade: str
    kind: str


def load_packs(paths: Iterable[str]) -> tuple[list[Rule], dict[str, PackClass]]:
    """Validate and compile-ready every pack; UsageError names the file and the problem."""
    rules: list[Rule] = []
    classes: dict[str, PackClass] = {}
    for path in paths:
        for rule, pack_class in _load_pack(Path(path)):
            if pack_class.info.id in CLASS_BY_ID or (pack_class.info.id in classes and
                                                     classes[pack_class.info.id] != pack_class):
                raise UsageError(f"rule pack {path}: class id {pack_class.info.id!r} is already defined")
            classes[pack_class.info.id] = pack_class
            rules.append(rule)
    return rules, classes


def _load_pack(path: Path) -> list[tuple[Rule, PackClass]]:
    try:
        # LibYAML's loader where PyYAML has it: 2,000 keywords parse in 0.03 s instead of 0.3 s.
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise UsageError(f"rule pack not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read rule pack {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"rule pack {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(data.get("rules"), list):
        raise UsageError(f"rule pack {path}: needs 'name' (text) and 'rules' (a list)")
    if data.get("version", 1) != 1:
        raise UsageError(f"rule pack {path}: unsupported schema version {data.get('version')!r} (only 1)")
    unknown = set(data) - {"name", "version", "description", "rules"}
    if unknown:
        raise UsageError(f"rule pack {path}: unknown key(s) {', '.join(sorted(unknown))}")
    out: list[tuple[Rule, PackClass]] = []
    for index, entry in enumerate(data["rules"]):
        where = f"rule pack {path}, rule {index + 1}"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: must be a mapping")
        out.extend(_rules_for(entry, path.parent, where))
    return out


def _rules_for(entry: dict[str, Any], base: Path, where: str) -> list[tuple[Rule, PackClass]]:
    allowed = {"id", "kind", "grade", "description", "terms", "terms_file", "caseless", "pattern"}
    unknown = set(entry) - allowed
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    class_id, kind, grade = entry.get("id"), entry.get("kind"), entry.get("grade")
    if not isinstance(class_id, str) or not _ID.fullmatch(class_id):
        raise UsageError(f"{where}: 'id' must be snake_case, e.g. project_codenames")
    if kind not in KINDS:
        raise UsageError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")
    if grade not in GRADES:
        raise UsageError(f"{where}: 'grade' must be one of {', '.join(GRADES)}")
    info = ClassInfo(class_id, "important_data", str(entry.get("description", f"{kind} rule {class_id}")))
    pack_class = PackClass(info, grade, kind)
    caseless = bool(entry.get("caseless", False))
    if kind == "regex":
        pattern = entry.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise UsageError(f"{where}: a regex rule needs 'pattern'")
        return [(Rule(class_id, pattern.encode("utf-8"), "any", boundary=ALNUM, caseless=caseless), pack_class)]
    if kind == "marking":
        terms = list(_MARKING_TERMS)
    else:
        terms = _terms(entry, base, where)
    rules = []
    for encoding in ("utf-8", "gbk"):
        encoded = set()
        for term in terms:
            try:
                encoded.add(term.encode(encoding))
            except UnicodeEncodeError:
                continue                  # a term GBK cannot spell is matched in UTF-8 only
        if encoding == "gbk":
            encoded -= {t.encode("utf-8") for t in terms}     # pure-ASCII terms: once is enough
        if not encoded:
            continue
        # Alternations of escaped literals: Hyperscan builds a literal matcher (Teddy/FDR) for them.
        # Hyperscan refuses a pattern longer than 16,000 characters, so a big dictionary becomes
        # several rules of the same class, each under _MAX_PATTERN bytes.
        boundary = ALNUM if all(t.isascii() for t in terms) else frozenset()
        for group in _groups([_escape(t) for t in sorted(encoded)]):
            pattern = b"(?:" + b"|".join(group) + b")"
            rules.append((Rule(class_id, pattern, "any", boundary=boundary, caseless=caseless,
                               encoding=encoding), pack_class))
    return rules


_MAX_PATTERN = 15_000


def _groups(escaped: list[bytes]) -> list[list[bytes]]:
    groups: list[list[bytes]] = [[]]
    size = 0
    for term in escaped:
        if groups[-1] and size + len(term) + 1 > _MAX_PATTERN:
            groups.append([])
            size = 0
        groups[-1].append(term)
        size += len(term) + 1
    return groups


def _terms(entry: dict[str, Any], base: Path, where: str) -> list[str]:
    terms: list[str] = []
    listed = entry.get("terms", [])
    if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
        raise UsageError(f"{where}: 'terms' must be a list of strings")
    terms.extend(listed)
    if "terms_file" in entry:
        file = base / str(entry["terms_file"])
        try:
            terms.extend(line.strip() for line in file.read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{where}: cannot read terms_file {file}: {exc}") from None
    terms = [t for t in dict.fromkeys(terms) if t and not t.startswith("#")]
    if not terms:
        raise UsageError(f"{where}: a terms rule needs 'terms' or 'terms_file' with at least one term")
    if len(terms) > MAX_TERMS:
        raise UsageError(f"{where}: {len(terms)} terms; at most {MAX_TERMS} per rule")
    if any(len(t.encode("utf-8")) < 2 for t in terms):
        raise UsageError(f"{where}: terms must be at least 2 bytes long")
    return terms


def _escape(term: bytes) -> bytes:
    # Hex escapes for everything but ASCII alphanumerics: safe for any byte, including NUL
    # (the literal API of python-hyperscan would truncate there).
    return b"".join(bytes([c]) if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122) else b"\\x%02x" % c
                    for c in term)

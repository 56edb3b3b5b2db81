"""Normalize, mask and digest candidate values, by class id.

Normalizers turn a matched candidate (as text, separators and all) into the one form that is
validated and counted, so "138-1234-5678", "+86 138 1234 5678" and "１３８１２３４５６７８" are
one distinct value. They do not validate: a normalizer returns garbage for garbage and the
validator rejects it.

Maskers produce the only form of a value that may leave the process (event samples). Each
reveals at most a fixed prefix/suffix; a value of an unexpected length is masked entirely
rather than partially, so a masker never reveals more than its documented shape.

`keyed_hash` gives a short keyed digest for correlating a value across events without
revealing it (an unkeyed hash of a 18-digit id would be brute-forced in minutes).

`ascii_digits_utf8` works on raw payload bytes before scanning: Hyperscan patterns are
ASCII, so full-width digits typed by Chinese input methods are folded to ASCII first.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable

# -- full-width folding ---------------------------------------------------------------------

# U+FF10..U+FF19 are the full-width digits of CJK input methods; the check character of a
# resident id is often typed as a full-width X or x; "+86" and "-" separators likewise.
FULLWIDTH_DIGITS: dict[int, int] = str.maketrans(
    {**{chr(0xFF10 + i): str(i) for i in range(10)},
     "\uff38": "X", "\uff58": "X", "\uff0b": "+", "\uff0d": "-"})

# UTF-8 of the characters above: U+FF10..FF19 = EF BC 90..99, X = EF BC B8, + = EF BC 8B,
# - = EF BC 8D, x = EF BD 98 (lower-case x maps to "x": the id normalizer upper-cases it).
_FULLWIDTH_UTF8: dict[bytes, bytes] = {
    **{bytes((0xEF, 0xBC, 0x90 + i)): str(i).encode() for i in range(10)},
    b"\xef\xbc\xb8": b"X", b"\xef\xbd\x98": b"x", b"\xef\xbc\x8b": b"+", b"\xef\xbc\x8d": b"-",
}
_FULLWIDTH_UTF8_RE = re.compile(rb"\xef\xbc[\x90-\x99\xb8\x8b\x8d]|\xef\xbd\x98")


def _fullwidth_replacement(match: re.Match[bytes]) -> bytes:
    return _FULLWIDTH_UTF8[match.group()]


def ascii_digits_utf8(data: bytes) -> bytes:
    """Replace UTF-8 full-width digits (and X, x, +, -) in `data` with their ASCII forms.

    The output is shorter than the input where it changes anything, so offsets into it do not
    map back to the payload (callers only count values, they do not locate them).

    Fast path: payloads without any EF BC sequence (nearly all of them) are returned as is.
    The single-byte search for EF runs at memchr speed (~0.3 us per 1500 bytes); the two-byte
    search alone is ~10x slower in CPython 3.11, so it only runs when EF occurs. Consequence: a lone full-width x (EF BD 98) among ASCII
    digits is not folded; an input method that types a full-width x types full-width digits
    too. In a GBK payload EF BC followed by a 9x lead byte can be two Chinese characters;
    folding those yields at worst a digit that the validators then reject.
    """
    if data.find(0xEF) < 0 or b"\xef\xbc" not in data:
        return data
    return _FULLWIDTH_UTF8_RE.sub(_fullwidth_replacement, data)


# -- normalizers ----------------------------------------------------------------------------

_DELETE_SPACES = str.maketrans("", "", " \t\u3000")
_DELETE_PHONE_SEPARATORS = str.maketrans("", "", " \t\u3000-.()")
# ASCII digits only: str.isdigit() would also keep "²" or Arabic-Indic digits.
_NON_DIGITS_RE = re.compile(r"[^0-9]+")


def normalize_cn_resident_id(value: str) -> str:
    """Fold full-width digits, drop spaces, upper-case the check character x."""
    return value.translate(FULLWIDTH_DIGITS).translate(_DELETE_SPACES).upper()


def normalize_cn_mobile(value: str) -> str:
    """Fold full-width digits, drop separators and a +86 / 0086 / 86 country prefix.

    The prefix is removed only when exactly 11 digits remain, so an 11-digit value that
    happens to start with 86 is left alone.
    """
    v = value.translate(FULLWIDTH_DIGITS).translate(_DELETE_PHONE_SEPARATORS)
    n = len(v)
    if n == 14 and v.startswith("+86"):
        return v[3:]
    if n == 15 and v.startswith("0086"):
        return v[4:]
    if n == 13 and v.startswith("86"):
        return v[2:]
    return v


def normalize_payment_card(value: str) -> str:
    """Digits only (separators such as spaces and dashes vary between forms)."""
    return _NON_DIGITS_RE.sub("", value.translate(FULLWIDTH_DIGITS))


def normalize_email(value: str) -> str:
    """Lower-case the domain (case-insensitive by DNS); the local part may be case-sensitive."""
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if not at:
        return value
    return f"{local}@{domain.lower()}"


def normalize_cn_uscc(value: str) -> str:
    """Fold full-width characters, drop spaces, upper-case."""
    return value.translate(FULLWIDTH_DIGITS).translate(_DELETE_SPACES).upper()


def normalize_iban(value: str) -> str:
    """Compact upper-case form (IBANs are printed in groups of four)."""
    return value.translate(FULLWIDTH_DIGITS).translate(_DELETE_SPACES).upper()


def normalize_cn_passport(value: str) -> str:
    """Upper-case (also used for MRZ lines, whose '<' fillers are kept)."""
    return value.translate(FULLWIDTH_DIGITS).strip().upper()


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "cn_resident_id": normalize_cn_resident_id,
    "cn_mobile": normalize_cn_mobile,
    "payment_card": normalize_payment_card,
    "email": normalize_email,
    "cn_uscc": normalize_cn_uscc,
    "iban": normalize_iban,
    "cn_passport": normalize_cn_passport,
}


# -- maskers --------------------------------------------------------------------------------

def _keep(value: str, head: int, tail: int) -> str:
    """`head` first and `tail` last characters, stars between; the total length is kept."""
    hidden = len(value) - head - tail
    return value[:head] + "*" * hidden + (value[-tail:] if tail else "")


def _all_stars(value: str) -> str:
    return "*" * len(value)


def mask_cn_resident_id(value: str) -> str:
    """18 chars: region (6) + 8 stars + sequence and check (4); 15 chars: 6 + 6 stars + 3.

    The birth date is always hidden.
    """
    n = len(value)
    if n == 18:
        return _keep(value, 6, 4)
    if n == 15:
        return _keep(value, 6, 3)
    return _all_stars(value)


def mask_cn_mobile(value: str) -> str:
    """138****5678 (the usual Chinese display form)."""
    return _keep(value, 3, 4) if len(value) == 11 else _all_stars(value)


def mask_payment_card(value: str) -> str:
    """First 6 (IIN) + stars + last 4, as PCI DSS allows for display; length kept."""
    return _keep(value, 6, 4) if 13 <= len(value) <= 19 else _all_stars(value)


def mask_email(value: str) -> str:
    """j***@example.com: first character of the local part only (fixed 3 stars, so the
    local part's length is not revealed); a one-character local part is hidden entirely."""
    local, at, domain = value.rpartition("@")
    if not at:
        return "***"
    head = local[0] if len(local) > 1 else ""
    return f"{head}***@{domain}"


def mask_cn_uscc(value: str) -> str:
    """First 2 (authority + entity type) + 14 stars + last 2; the region code stays hidden."""
    return _keep(value, 2, 2) if len(value) == 18 else _all_stars(value)


def mask_iban(value: str) -> str:
    """Country and check digits (4) + stars + last 4; length kept (it is per-country anyway)."""
    return _keep(value, 4, 4) if len(value) >= 12 else _all_stars(value)


def mask_cn_passport(value: str) -> str:
    """First 2 + stars + last 2; at least 4 characters stay hidden."""
    return _keep(value, 2, 2) if len(value) >= 8 else _all_stars(value)


MASKERS: dict[str, Callable[[str], str]] = {
    "cn_resident_id": mask_cn_resident_id,
    "cn_mobile": mask_cn_mobile,
    "payment_card": mask_payment_card,
    "email": mask_email,
    "cn_uscc": mask_cn_uscc,
    "iban": mask_iban,
    "cn_passport": mask_cn_passport,
}


# -- keyed digest ---------------------------------------------------------------------------

def keyed_hash(value: str, key: bytes) -> str:
    """First 16 hex chars of HMAC-SHA256(key, normalized value).

    Keyed, because identifier spaces are small enough to enumerate: without the key the
    digest cannot be reversed by hashing every possible id. 64 bits is ample for
    correlation within one deployment.
    """
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

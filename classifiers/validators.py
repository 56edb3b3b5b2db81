"""Confirm candidate values found by the Hyperscan patterns: structure plus checksums.

Each validator takes the NORMALIZED value (see `classifiers.normalize`) and returns a bool
(`mrz_passport_line` returns the passport number or None). They run once per candidate, so
every one first gates on a precompiled `fullmatch` (cheap, and guarantees the characters the
checksum code assumes) and none uses exceptions for ordinary rejects.

What they check: lengths, character sets, region prefixes, calendar dates, check digits.
What they don't: whether a value was ever issued (a county existing in the birth year,
a BIN being assigned, a passport number series in use). Those lookups reject real values
(residence permits, renamed counties) more often than they remove false positives.

python-stdnum traps (see tests/classifiers/test_validators.py):
- `stdnum.cn.ric.calc_check_digit(number)` expects the FULL 18-character number and ignores
  its last character; given the 17-digit body it silently computes the check over the first
  16 digits and returns a wrong digit. `stdnum.cn.ric.validate` additionally rejects HK/MO/TW
  residence permits and ids of counties created after the birth year, so it is not used.
- `stdnum.cn.uscc.validate` requires the first 8 characters to be digits and so rejects
  checksum-valid codes of authorities A, N and Y; the MOD 31-3 check character is computed
  here (`uscc_check`, the same formula as `stdnum.cn.uscc.calc_check_digit` without its
  per-call `compact()`), after our own structure check.
- `stdnum.luhn.is_valid` and `stdnum.iban.is_valid` control their flow with exceptions;
  the Luhn sum is computed here (`luhn_ok`, ~6x faster than `stdnum.luhn.checksum`, and card
  candidates are the most numerous), and IBANs are pre-gated by a regex.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from stdnum import iban as _iban
from stdnum.cn import ric as _ric

# GB/T 2260 province-level codes, plus 71 (Taiwan) and the 81/82/83 prefixes of residence
# permits for Hong Kong, Macao and Taiwan residents (2018).
CN_PROVINCES: frozenset[str] = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 "
    "50 51 52 53 54 61 62 63 64 65 71 81 82 83".split())

_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_date(year: int, month: int, day: int) -> bool:
    """A real Gregorian date (no datetime: it signals bad dates with an exception)."""
    if not 1 <= month <= 12 or day < 1:
        return False
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return day <= 29
    return day <= _DAYS_IN_MONTH[month]


# -- resident identity number (GB 11643) ----------------------------------------------------

# [0-9] rather than \d: \d would admit non-ASCII digits, which int() happily converts.
_RID18_RE = re.compile(r"[1-8][0-9]{16}[0-9X]")
_RID15_RE = re.compile(r"[1-8][0-9]{14}")


def cn_resident_id(v: str) -> bool:
    """18-character PRC resident id or HK/MO/TW residence permit number."""
    if _RID18_RE.fullmatch(v) is None or v[:2] not in CN_PROVINCES:
        return False
    year = int(v[6:10])
    if not 1900 <= year <= 2099 or not _is_date(year, int(v[10:12]), int(v[12:14])):
        return False
    # Trap: calc_check_digit() drops the last character of its argument, so pass all 18.
    return _ric.calc_check_digit(v) == v[17]


def cn_resident_id_legacy(v: str) -> bool:
    """15-digit first-generation id (YYMMDD birth date in the 1900s, no check digit)."""
    if _RID15_RE.fullmatch(v) is None or v[:2] not in CN_PROVINCES:
        return False
    return _is_date(1900 + int(v[6:8]), int(v[8:10]), int(v[10:12]))


# -- payment cards --------------------------------------------------------------------------

_CARD_RE = re.compile(r"[2-6][0-9]{12,18}")
# Luhn: every second digit from the right is doubled, and a doubled digit counts as the sum of
# its two digits (2*7 = 14 -> 5); this table maps each digit to that.
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits (the caller's regex ensures that).

    Summing the encoded bytes adds 48 ("0") per digit, taken off at the end: one C-level loop
    instead of an int() call per digit."""
    return (sum((digits[-1::-2] + digits[-2::-2].translate(_LUHN_DOUBLED)).encode()) - 48 * len(digits)) % 10 == 0
_UNIONPAY_RE = re.compile(r"(?:62|81)[0-9]{14,17}")


def payment_card(v: str) -> bool:
    """13-19 digits, Luhn valid, issuer prefix of a real network.

    First digit 2: Mastercard 2221-2720 or Mir 2200-2204 (the rest of the 2-series is
    unassigned); 3 Amex/JCB/Diners; 4 Visa; 5 Mastercard; 6 Discover/UnionPay.
    """
    if _CARD_RE.fullmatch(v) is None:
        return False
    if v[0] == "2":
        iin = int(v[:4])
        if not (2221 <= iin <= 2720 or 2200 <= iin <= 2204):
            return False
    if v.count(v[0]) == len(v):           # 4444...4 style test fillers; some pass Luhn
        return False
    return luhn_ok(v)


def unionpay_unchecked(v: str) -> bool:
    """16-19 digits in UnionPay ranges 62/81, without Luhn (not all UnionPay cards pass it).

    Weak on its own: the engine accepts these only next to a card hotword.
    """
    return _UNIONPAY_RE.fullmatch(v) is not None


# -- mobile numbers -------------------------------------------------------------------------

# libphonenumber CN mobile pattern; [59][0-35-9] already covers the 190-193 and 195-199
# segments issued since 2019 (194 is unassigned). 140-144 are 13-digit IoT numbers.
_CN_MOBILE_RE = re.compile(r"1740[0-5][0-9]{6}|1(?:[38][0-9]|4[57]|[59][0-35-9]|6[25-7]|7[0-35-8])[0-9]{8}")


def cn_mobile(v: str) -> bool:
    """11-digit mainland mobile number in an MIIT segment (prefix != carrier: portability)."""
    return _CN_MOBILE_RE.fullmatch(v) is not None


# -- e-mail ---------------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"[A-Za-z0-9_%+-](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"       # local: no leading/trailing dot
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"            # labels: no leading/trailing dash
    r"([A-Za-z]{2,24})")
# Retina-image names ("logo@2x.png") and bundler output ("chunk@1.2.js") in web assets
# look like addresses; none of these is a delegated TLD.
ASSET_SUFFIXES: frozenset[str] = frozenset(
    "png jpg jpeg gif svg webp avif bmp ico js mjs css map json xml html htm "
    "woff woff2 ttf otf eot".split())


def email(v: str) -> bool:
    """local@domain with a conservative (RFC 5322 dot-atom subset) syntax and an alphabetic TLD."""
    m = _EMAIL_RE.fullmatch(v)
    if m is None or len(v) > 254:
        return False
    if ".." in v[:v.index("@")]:
        return False
    return m.group(1).lower() not in ASSET_SUFFIXES


# -- unified social credit code (GB 32100) --------------------------------------------------

# Alphabet 0-9 A-H J-N P-R T U W-Y (no I O S V Z). [1] registration authority, [2] entity
# type, [3-8] region code (digits), [9-17] organisation code, [18] check.
_USCC_RE = re.compile(r"[1-9ANY][0-9A-HJ-NP-RTUW-Y][0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10}")

# GB 32100-2015 code tables: registration authority -> its entity type codes (1 机构编制: 机关,
# 事业单位, 群众团体, 其他; 2 外交; 3 司法行政; 4 文化; 5 民政; 6 旅游; 7 宗教; 8 工会; 9 工商:
# 企业, 个体工商户, 农民专业合作社; A 中央军委改革和编制办公室; N 农业; Y 其他, always 1).
USCC_ENTITY_TYPES: dict[str, str] = {
    "1": "1239", "2": "19", "3": "123459", "4": "19", "5": "1239", "6": "129", "7": "129", "8": "19",
    "9": "123", "A": "19", "N": "1239", "Y": "1",
}
USCC_AUTHORITY_TYPES: frozenset[str] = frozenset(a + t for a, types in USCC_ENTITY_TYPES.items() for t in types)
# The region code is a GB/T 2260 division: a province-level prefix, or 10 for national-level
# registrations (100000, e.g. central state-owned enterprises).
USCC_REGION_PREFIXES: frozenset[str] = CN_PROVINCES | {"10"}


_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUES = {c: i for i, c in enumerate(_USCC_ALPHABET)}
_USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))      # 1 3 9 27 19 26 16 ... (ISO 7064 MOD 31-3)


def uscc_check(body: str) -> str:
    """The check character of a 17-character USCC body (characters of the USCC alphabet)."""
    total = sum(map(operator.mul, map(_USCC_VALUES.__getitem__, body), _USCC_WEIGHTS))
    return _USCC_ALPHABET[-total % 31]


def cn_uscc(v: str) -> bool:
    """Unified social credit code, including A/N/Y authorities that stdnum's validate() rejects.

    Beyond the alphabet and the check character: the authority/entity-type pair and the region
    prefix must be ones GB 32100 and GB/T 2260 define (the built-in pattern finds only those).
    """
    if _USCC_RE.fullmatch(v) is None or v[:2] not in USCC_AUTHORITY_TYPES or v[2:4] not in USCC_REGION_PREFIXES:
        return False
    return uscc_check(v[:17]) == v[17]


# -- IBAN -----------------------------------------------------------------------------------

_IBAN_RE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")


def iban(v: str) -> bool:
    """ISO 13616 IBAN: per-country length and BBAN format, MOD 97-10 (via stdnum)."""
    # The regex rejects most candidates before stdnum, which raises internally on rejects.
    return _IBAN_RE.fullmatch(v) is not None and _iban.is_valid(v)


# -- passport -------------------------------------------------------------------------------

_CN_PASSPORT_RE = re.compile(
    r"E[0-9]{8}|E[A-HJ-NP-Z][0-9]{7}|G[0-9]{8}|1[45][0-9]{7}|[PSD]E[0-9]{7}|K[0-9]{8}|H[0-9]{8}|MA[0-9]{7}")


def cn_passport(v: str) -> bool:
    """Format of PRC (E/G/14/15, official PE/SE/DE), HKSAR (K/H) and MSAR (MA) passports.

    There is no check digit in the printed number: the engine requires a hotword or MRZ.
    """
    return _CN_PASSPORT_RE.fullmatch(v) is not None


# ICAO 9303 check digits: 0-9 -> 0-9, A-Z -> 10-35, '<' -> 0; weights 7 3 1 repeating.
_MRZ_VALUES: dict[str, int] = {
    **{str(i): i for i in range(10)},
    **{chr(ord("A") + i): 10 + i for i in range(26)},
    "<": 0,
}
_MRZ_LINE2_RE = re.compile(
    r"[A-Z0-9<]{9}[0-9][A-Z<]{3}[0-9]{6}[0-9][MFX<][0-9]{6}[0-9][A-Z0-9<]{14}[0-9<][0-9]")
_MRZ_NUMBER_RE = re.compile(r"[A-Z0-9]+<*")


def _mrz_check(field: str) -> int:
    values = _MRZ_VALUES          # every char is in the table: the line regex ran first
    return sum(values[c] * (7, 3, 1)[i % 3] for i, c in enumerate(field)) % 10


def _mrz_date_ok(yymmdd: str) -> bool:
    # The century is not in the MRZ; year 2000 stands for "00" (leap in 2000, not in 1900).
    return _is_date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6]))


def mrz_passport_line(line: str) -> str | None:
    """ICAO 9303 TD3 line 2 (44 chars) -> the passport number if every check digit holds.

    Layout: number(9) check, nationality(3), birth YYMMDD check, sex, expiry YYMMDD check,
    personal number(14) check, composite check over 1-10, 14-20 and 22-43.
    """
    if _MRZ_LINE2_RE.fullmatch(line) is None:
        return None
    number = line[0:9]
    if _MRZ_NUMBER_RE.fullmatch(number) is None:        # filler only after the number
        return None
    if _mrz_check(number) != int(line[9]):
        return None
    if not _mrz_date_ok(line[13:19]) or _mrz_check(line[13:19]) != int(line[19]):
        return None
    if not _mrz_date_ok(line[21:27]) or _mrz_check(line[21:27]) != int(line[27]):
        return None
    personal, personal_check = line[28:42], line[42]
    if personal_check == "<":
        # Only allowed when the optional field is empty (Doc 9303 Part 4, 4.2.2.2).
        if personal.strip("<"):
            return None
    elif _mrz_check(personal) != int(personal_check):
        return None
    if _mrz_check(line[0:10] + line[13:20] + line[21:43]) != int(line[43]):
        return None
    return number.rstrip("<")


VALIDATORS: dict[str, Callable[[str], bool]] = {
    "cn_resident_id": cn_resident_id,
    "cn_mobile": cn_mobile,
    "payment_card": payment_card,
    "email": email,
    "cn_uscc": cn_uscc,
    "iban": iban,
    "cn_passport": cn_passport,
}

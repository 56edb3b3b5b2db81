"""Built-in personal-data classes: one `Rule` per Hyperscan pattern, several rules per class.

A rule finds candidates; the engine confirms each with the rule's validator on the normalized
value, so patterns are deliberately permissive about separators and strict where that is
cheap for Hyperscan (fixed-width digit runs, literal prefixes, code tables). Hyperscan has no
lookaround, so boundaries ("not inside a longer run of letters or digits") are checked by
the engine on the bytes around each match; `fenced` rules also carry the left one in the
pattern itself (see `Rule.fenced`).

How a pattern is written decides most of Hyperscan's cost and how many candidates Python
has to confirm (issue 5, measured on the 300 MB benchmark mix, benchmarks/RESULTS.md): a
value that may start at any digit keeps Hyperscan's automaton busy through every long
number, and each of those starts is a candidate. The fence byte in front makes a value start
only where a token starts. The USCC pattern spells out the code tables (authority and entity
type, province-level region), which keeps 18-digit numbers out; the card pattern spells out
the 2-series IIN ranges the validator accepts. Alternations of many short literals cost more
than they save: IBAN country codes (89 two-letter alternatives) made the IBAN rule slower
than `[A-Z]{2}`, so the country is left to the validator.

Class ids are stable API (events, metrics, rule packs): cn_resident_id, cn_mobile,
payment_card, email, cn_uscc, iban, cn_passport.

Default sensitivity is a profile choice with a cited source: GB/T 35273-2020 Annex B lists
identity card numbers and bank account/card numbers as sensitive personal information;
GB/T 45574-2025 treats a bare identity number (without the linked person) as not
sensitive. The `pipl-35273` profile (default) follows 35273; see `SENSITIVITY_PROFILES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from classifiers.validators import USCC_AUTHORITY_TYPES, USCC_REGION_PREFIXES

# Bytes that continue a token: a value touching one of these on either side is part of a
# longer token (hex session ids, order numbers) and is not a candidate.
ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
EMAIL_CHARS = ALNUM | frozenset(b"._%+-")


@dataclass(frozen=True, slots=True)
class ClassInfo:
    id: str
    category: str          # identity | contact | financial | organisation
    description: str


@dataclass(frozen=True, slots=True)
class Rule:
    class_id: str
    pattern: bytes                             # Hyperscan regex, compiled with SOM_LEFTMOST
    validator: str                             # name in classifiers.validators.VALIDATORS
    confidence: str = "high"                   # high | low
    hotwords: tuple[str, ...] = ()             # when set, one must appear shortly before the value
    boundary: frozenset[int] = field(default=ALNUM)
    caseless: bool = False
    encoding: str = "ascii"                    # how matched bytes are read back into a value
    # Tokens whose leftmost start Hyperscan may place far back (an unbounded run of allowed
    # bytes): re-anchor on this byte and take at most `anchor_reach` boundary bytes before it.
    anchor: bytes = b""
    anchor_reach: int = 0
    dotted: bool = False                       # "." followed by a token byte continues the token
    text_only: bool = False                    # reject candidates surrounded by binary data
    # The engine compiles the pattern behind one byte outside `boundary` (the left boundary as
    # part of the match, since Hyperscan has no lookbehind) and starts every stream with a line
    # break, so a value at the very start has one too. Candidates then start only at token
    # starts: far fewer of them, and a much cheaper automaton on digit-heavy data.
    fenced: bool = False
    # A Python regex (bytes): a candidate is rejected when text it matches ends right where the
    # value starts (what a card-shaped run inside a printed IBAN looks like, for instance).
    not_after: bytes = b""


CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo("cn_resident_id", "identity", "PRC resident identity number (GB 11643), incl. HK/MO/TW residence permits"),
    ClassInfo("cn_mobile", "contact", "Mainland China mobile number (MIIT segments)"),
    ClassInfo("payment_card", "financial", "Payment card number (Luhn; UnionPay non-Luhn only with a hotword)"),
    ClassInfo("email", "contact", "E-mail address"),
    ClassInfo("cn_uscc", "organisation", "Unified social credit code (GB 32100)"),
    ClassInfo("iban", "financial", "International bank account number (ISO 13616)"),
    ClassInfo("cn_passport", "identity", "PRC passport number (with a hotword or a valid MRZ line)"),
)
CLASS_BY_ID = {c.id: c for c in CLASSES}

SENSITIVITY_PROFILES: dict[str, dict[str, bool]] = {
    # GB/T 35273-2020 Annex B: identity documents and financial accounts are sensitive PI.
    "pipl-35273": {"cn_resident_id": True, "cn_passport": True, "payment_card": True, "iban": True,
                   "cn_mobile": False, "email": False, "cn_uscc": False},
    # GB/T 45574-2025: a bare identity number alone is not sensitive; financial accounts are.
    "gbt-45574": {"cn_resident_id": False, "cn_passport": False, "payment_card": True, "iban": True,
                  "cn_mobile": False, "email": False, "cn_uscc": False},
}

def _alternatives(codes: Iterable[str]) -> bytes:
    """Two-character codes as a compact alternation: {"10", "11", "21"} -> (?:1[01]|2[1])."""
    by_first: dict[str, list[str]] = {}
    for code in sorted(codes):
        by_first.setdefault(code[0], []).append(code[1])
    return b"(?:" + b"|".join(f"{first}[{''.join(rest)}]".encode() for first, rest in by_first.items()) + b")"


# Card prefixes: first digit 2 only in the Mastercard 2221-2720 and Mir 2200-2204 ranges (as the
# validator requires); 3, 4, 5 and 6 any.
_CARD_IIN = rb"(?:2(?:20[0-4]|22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|[3-6]\d{3})"
_USCC_HEAD = _alternatives(USCC_AUTHORITY_TYPES) + _alternatives(USCC_REGION_PREFIXES)

# The head of an IBAN printed in groups of four ("PT59 3334 3456 ..."): about 4 % of printed
# IBANs hold a Luhn-valid card-shaped run after it (measured on the benchmark mix).
_PRINTED_IBAN_HEAD = rb"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: [A-Z0-9]{4})* "

_CARD_HOTWORDS = ("卡号", "银行卡", "信用卡", "借记卡", "card no", "card number", "cardno", "card_no", "pan")
_PASSPORT_HOTWORDS = ("护照", "passport", "護照", "passport_no", "passportno")

RULES: tuple[Rule, ...] = (
    Rule("cn_resident_id", rb"[1-8]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]",
         "cn_resident_id", fenced=True),
    Rule("cn_resident_id", rb"[1-8]\d{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}",
         "cn_resident_id_legacy", confidence="low", fenced=True),
    Rule("cn_mobile", rb"(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}", "cn_mobile", fenced=True),
    Rule("payment_card", _CARD_IIN + rb"(?:[ -]?\d{4}){2}[ -]?\d{1,7}", "payment_card", fenced=True,
         not_after=_PRINTED_IBAN_HEAD),
    Rule("payment_card", rb"(?:62|81)\d{2}(?:[ -]?\d{4}){2}[ -]?\d{4,7}", "unionpay_unchecked",
         hotwords=_CARD_HOTWORDS, fenced=True, not_after=_PRINTED_IBAN_HEAD),
    # Not fenced: the local part is an unbounded run that the engine re-anchors on "@".
    Rule("email", rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}", "email",
         boundary=EMAIL_CHARS, anchor=b"@", anchor_reach=64, dotted=True, text_only=True),
    Rule("cn_uscc", _USCC_HEAD + rb"\d{4}[0-9A-HJ-NP-RTUW-Y]{10}", "cn_uscc", fenced=True),
    Rule("iban", rb"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?", "iban", fenced=True),
    Rule("cn_passport", rb"(?:E[A-HJ-NP-Z0-9]|[GKH]\d|1[45]|[PSD]E|MA)\d{7}", "cn_passport",
         hotwords=_PASSPORT_HOTWORDS, fenced=True),
    # ICAO 9303 TD3 line 2: number, check, nationality CHN, birth date, check, sex, expiry, check, ...
    Rule("cn_passport", rb"[A-Z0-9<]{9}\dCHN\d{7}[MFX<]\d{7}[A-Z0-9<]{14}[\d<]\d", "mrz_passport_line",
         boundary=ALNUM | frozenset(b"<"), fenced=True),
)

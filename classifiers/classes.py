"""Built-in personal-data classes: one `Rule` per Hyperscan pattern, several rules per class.

A rule finds candidates; the engine confirms each with the rule's validator on the normalized
value, so patterns are deliberately permissive about separators and strict only where that
is cheap for Hyperscan (fixed-width digit runs, literal prefixes). Hyperscan has no
lookaround, so boundaries ("not inside a longer run of letters or digits") are checked by
the engine on the bytes around each match.

Class ids are stable API (events, metrics, rule packs): cn_resident_id, cn_mobile,
payment_card, email, cn_uscc, iban, cn_passport.

Default sensitivity is a profile choice with a cited source: GB/T 35273-2020 Annex B lists
identity card numbers and bank account/card numbers as sensitive personal information;
GB/T 45574-2025 treats a bare identity number (without the linked person) as not
sensitive. The `pipl-35273` profile (default) follows 35273; see `SENSITIVITY_PROFILES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

_CARD_HOTWORDS = ("卡号", "银行卡", "信用卡", "借记卡", "card no", "card number", "cardno", "card_no", "pan")
_PASSPORT_HOTWORDS = ("护照", "passport", "護照", "passport_no", "passportno")

RULES: tuple[Rule, ...] = (
    Rule("cn_resident_id", rb"[1-8]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]",
         "cn_resident_id"),
    Rule("cn_resident_id", rb"[1-8]\d{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}",
         "cn_resident_id_legacy", confidence="low"),
    Rule("cn_mobile", rb"(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}", "cn_mobile"),
    Rule("payment_card", rb"[2-6]\d{3}(?:[ -]?\d{4}){2}[ -]?\d{1,7}", "payment_card"),
    Rule("payment_card", rb"(?:62|81)\d{2}(?:[ -]?\d{4}){2}[ -]?\d{4,7}", "unionpay_unchecked",
         hotwords=_CARD_HOTWORDS),
    Rule("email", rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}", "email",
         boundary=EMAIL_CHARS, anchor=b"@", anchor_reach=64, dotted=True, text_only=True),
    Rule("cn_uscc", rb"[1-9ANY][0-9A-HJ-NP-RTUW-Y]\d{6}[0-9A-HJ-NP-RTUW-Y]{10}", "cn_uscc"),
    Rule("iban", rb"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?", "iban"),
    Rule("cn_passport", rb"(?:E[A-HJ-NP-Z0-9]|[GKH]\d|1[45]|[PSD]E|MA)\d{7}", "cn_passport",
         hotwords=_PASSPORT_HOTWORDS),
    # ICAO 9303 TD3 line 2: number, check, nationality CHN, birth date, check, sex, expiry, check, ...
    Rule("cn_passport", rb"[A-Z0-9<]{9}\dCHN\d{7}[MFX<]\d{7}[A-Z0-9<]{14}[\d<]\d", "mrz_passport_line",
         boundary=ALNUM | frozenset(b"<")),
)

"""Normalizers (separators, prefixes, full-width digits), maskers (never more than the allowed
prefix/suffix of a raw value) and the keyed digest."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from classifiers import normalize as n
from classifiers import validators as v
from classifiers.classes import CLASS_BY_ID
from tests.classifiers.test_validators import make_card, make_iban, make_rid, make_uscc

FW = str.maketrans("0123456789", "０１２３４５６７８９")      # ASCII -> full-width, for inputs

RID = make_rid("11010519491231002")                         # ends in X
CARD = make_card("622848012345123")
USCC = make_uscc("91350211M000100Y4")
IBAN = make_iban("DE", "370400440532013000")


def test_registries_cover_every_class():
    assert set(n.NORMALIZERS) == set(CLASS_BY_ID)
    assert set(n.MASKERS) == set(CLASS_BY_ID)


# -- full-width folding ---------------------------------------------------------------------

def test_fullwidth_table():
    assert "０１２３４５６７８９".translate(n.FULLWIDTH_DIGITS) == "0123456789"
    assert "ＸｘＡ".translate(n.FULLWIDTH_DIGITS) == "XXＡ"        # only X is an id character
    assert "＋８６－".translate(n.FULLWIDTH_DIGITS) == "+86-"
    assert "手机：".translate(n.FULLWIDTH_DIGITS) == "手机："         # full-width colon is not a digit


def test_ascii_digits_utf8_folds_digits_and_keeps_other_text():
    text = "身份证：" + RID[:17].translate(FW) + "Ｘ，手机：＋８６ " + "13812345678".translate(FW)
    out = n.ascii_digits_utf8(text.encode())
    assert out == ("身份证：" + RID + "，手机：+86 13812345678").encode()
    assert out.decode("utf-8")                                # still valid UTF-8


def test_ascii_digits_utf8_every_digit_and_letter():
    data = "".join(chr(0xFF10 + i) for i in range(10)).encode() + "Ｘｘ＋－".encode()
    assert n.ascii_digits_utf8(data) == b"0123456789Xx+-"


def test_ascii_digits_utf8_fast_path_returns_the_same_object():
    ascii_data = f"id={RID}&tel=13812345678".encode()
    assert n.ascii_digits_utf8(ascii_data) is ascii_data
    gbk = "身份证号码".encode("gbk")
    assert n.ascii_digits_utf8(gbk) is gbk
    lone_x = f"{RID[:17]}ｘ".encode()       # EF BD 98 without any EF BC: documented as not folded
    assert n.ascii_digits_utf8(lone_x) is lone_x
    assert n.ascii_digits_utf8(b"") == b""


def test_ascii_digits_utf8_leaves_other_ef_bc_sequences():
    for data in ("：；（）".encode(), b"abc\xef\xbc", b"\xef\xbc\x8a\xef\xbc\xa0"):
        assert n.ascii_digits_utf8(data) == data


# -- normalizers ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    RID, RID.lower(), RID[:6] + " " + RID[6:14] + " " + RID[14:].lower(),
    RID[:17].translate(FW) + "ｘ", RID[:17].translate(FW) + "Ｘ", " " + RID + " ",
])
def test_normalize_resident_id(raw):
    assert n.normalize_cn_resident_id(raw) == RID
    assert v.cn_resident_id(n.NORMALIZERS["cn_resident_id"](raw))


@pytest.mark.parametrize("raw", [
    "13812345678", "138-1234-5678", "138 1234 5678", "138.1234.5678", "(138)1234-5678",
    "+86 138 1234 5678", "+8613812345678", "+86-138-1234-5678", "0086 138 1234 5678",
    "008613812345678", "86 13812345678", "8613812345678", "(+86) 138-1234-5678",
    "１３８１２３４５６７８", "＋８６ １３８－１２３４－５６７８",
])
def test_normalize_mobile(raw):
    assert n.normalize_cn_mobile(raw) == "13812345678"
    assert v.cn_mobile(n.NORMALIZERS["cn_mobile"](raw))


@pytest.mark.parametrize("raw, expected", [
    ("86123456789", "86123456789"),          # 11 digits starting with 86: not a prefix
    ("861381234567", "861381234567"),        # 12 digits: no prefix removed
    ("+1 138 1234 5678", "+113812345678"),   # other country codes stay (and fail validation)
    ("0086 138 1234 567", "00861381234567"),    # 14 digits: not 0086 + 11
])
def test_normalize_mobile_keeps_what_is_not_a_country_prefix(raw, expected):
    assert n.normalize_cn_mobile(raw) == expected
    assert not v.cn_mobile(n.normalize_cn_mobile(raw))


@pytest.mark.parametrize("raw", [
    CARD, " ".join(CARD[i:i + 4] for i in range(0, 16, 4)), "-".join(CARD[i:i + 4] for i in range(0, 16, 4)),
    CARD.translate(FW), CARD[:8].translate(FW) + " " + CARD[8:],
])
def test_normalize_payment_card(raw):
    assert n.normalize_payment_card(raw) == CARD
    assert v.payment_card(n.NORMALIZERS["payment_card"](raw))


def test_normalize_payment_card_drops_non_ascii_digits():
    # str.isdigit() would keep these and the Luhn code would choke or mis-read them.
    assert n.normalize_payment_card(CARD[:8] + "²٣" + CARD[8:]) == CARD


def test_normalize_email_lowercases_domain_only():
    assert n.normalize_email("John.Doe@Example.COM") == "John.Doe@example.com"
    assert n.normalize_email(" a@B.cn ") == "a@b.cn"
    assert n.normalize_email("no-at-sign") == "no-at-sign"
    assert v.email(n.NORMALIZERS["email"]("Li.Si@Mail.Example.COM.CN"))


def test_normalize_uscc_iban_passport():
    assert n.normalize_cn_uscc(USCC.lower()) == USCC
    assert n.normalize_cn_uscc(USCC[:9] + " " + USCC[9:]) == USCC
    assert v.cn_uscc(n.NORMALIZERS["cn_uscc"](USCC[:8].translate(FW) + USCC[8:].lower()))
    spaced = " ".join(IBAN[i:i + 4] for i in range(0, len(IBAN), 4))
    assert n.normalize_iban(spaced.lower()) == IBAN
    assert v.iban(n.NORMALIZERS["iban"](spaced))
    assert n.normalize_cn_passport("ea1234567") == "EA1234567"
    assert v.cn_passport(n.NORMALIZERS["cn_passport"](" ea1234567 "))
    assert n.normalize_cn_passport("ea1234567<chn") == "EA1234567<CHN"     # MRZ fillers kept


# -- maskers: exact shapes ------------------------------------------------------------------

def test_mask_examples():
    assert n.mask_cn_resident_id(RID) == "110105********002X"
    assert n.mask_cn_resident_id("110105491231002") == "110105******002"
    assert n.mask_cn_mobile("13812345678") == "138****5678"
    assert n.mask_payment_card(CARD) == "622848******" + CARD[-4:]
    assert n.mask_email("john.doe@example.com") == "j***@example.com"
    assert n.mask_cn_uscc(USCC) == "91" + "*" * 14 + USCC[-2:]
    assert n.mask_iban(IBAN) == "DE89" + "*" * 14 + "3000"
    assert n.mask_cn_passport("EA1234567") == "EA*****67"


def test_mask_email_hides_local_length_and_single_char_locals():
    assert n.mask_email("ab@example.com") == n.mask_email("abcdefgh@example.com")
    assert n.mask_email("ab@example.com") == "a***@example.com"
    assert n.mask_email("a@example.com") == "***@example.com"
    assert n.mask_email("not-an-address") == "***"


@pytest.mark.parametrize("class_id, value", [
    ("cn_resident_id", "1101051949123100"), ("cn_resident_id", "1101051949123100211"),
    ("cn_mobile", "1381234567"), ("cn_mobile", "138123456789"),
    ("payment_card", "411111111111"), ("payment_card", "41111111111111111111"),
    ("cn_uscc", USCC[:-1]), ("iban", "DE8937040"), ("cn_passport", "E123456"),
])
def test_unexpected_lengths_are_masked_entirely(class_id, value):
    assert n.MASKERS[class_id](value) == "*" * len(value)


# -- maskers: property over many generated values -------------------------------------------

ALLOWED = {  # class id -> {length: (revealed prefix, revealed suffix)}
    "cn_resident_id": {18: (6, 4), 15: (6, 3)},
    "cn_mobile": {11: (3, 4)},
    "payment_card": {length: (6, 4) for length in range(13, 20)},
    "cn_uscc": {18: (2, 2)},
    "iban": {length: (4, 4) for length in range(15, 35)},
    "cn_passport": {9: (2, 2)},
}


def _digits(rng: random.Random, k: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(k))


def _generate(rng: random.Random) -> list[tuple[str, str]]:
    values: list[tuple[str, str]] = []
    provinces = sorted(v.CN_PROVINCES)
    for _ in range(300):
        body = (rng.choice(provinces) + _digits(rng, 4) + str(rng.randint(1900, 2099))
                + f"{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}" + _digits(rng, 3))
        values.append(("cn_resident_id", make_rid(body)))
        values.append(("cn_resident_id", body[:6] + body[8:14] + body[14:17]))     # legacy 15
        values.append(("cn_mobile", "1" + rng.choice("3589") + _digits(rng, 9)))
        values.append(("payment_card", make_card(rng.choice("3456") + _digits(rng, rng.randint(11, 17)))))
        values.append(("cn_uscc", make_uscc("9" + rng.choice("123") + _digits(rng, 6)
                                            + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY")
                                                      for _ in range(9)))))
        values.append(("iban", make_iban("DE", _digits(rng, 18))))
        values.append(("iban", make_iban("FR", _digits(rng, 10) + "".join(rng.choice("ABC0123") for _ in range(11))
                                         + _digits(rng, 2))))
        values.append(("cn_passport", rng.choice(["E", "G", "K"]) + _digits(rng, 8)))
        values.append(("cn_passport", "E" + rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + _digits(rng, 7)))
    return values


def _occurrences(haystack: str, needle: str) -> list[int]:
    found, start = [], haystack.find(needle)
    while start >= 0:
        found.append(start)
        start = haystack.find(needle, start + 1)
    return found


def test_masks_reveal_only_the_allowed_prefix_and_suffix():
    rng = random.Random(20240601)
    values = _generate(rng)
    assert len(values) > 2000
    for class_id, raw in values:
        assert n.NORMALIZERS[class_id](raw) == raw
        masked = n.MASKERS[class_id](raw)
        size = len(raw)
        head, tail = ALLOWED[class_id][size]
        assert len(masked) == size
        assert masked[:head] == raw[:head] and masked[size - tail:] == raw[size - tail:]
        assert set(masked[head:size - tail]) == {"*"}, (class_id, masked)
        assert sum(c != "*" for c in masked) == head + tail
        # No run of >= 5 raw characters appears outside the allowed prefix/suffix (a run
        # of 5 inside any longer run would be found, so windows of 5 cover all lengths).
        for i in range(size - 4):
            for at in _occurrences(masked, raw[i:i + 5]):
                assert at + 5 <= head or at >= size - tail, (class_id, raw, masked, at)


def test_email_masks_reveal_one_local_character_and_the_domain():
    rng = random.Random(5)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789._+-"
    for _ in range(1000):
        local = rng.choice("abcdefghij") + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        domain = "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 12))) + ".com"
        masked = n.mask_email(f"{local}@{domain}")
        assert masked == f"{local[0]}***@{domain}"
        masked_local = masked.split("@")[0]
        assert not any(local[i:i + 2] in masked_local for i in range(len(local) - 1))


@pytest.mark.parametrize("class_id", sorted(ALLOWED))
def test_masks_of_arbitrary_strings_never_reveal_more_than_the_maximum(class_id):
    # Maskers may receive any string (a validator bug, a future rule): the cap must hold anyway.
    rng = random.Random(class_id)
    cap = max(h + t for h, t in ALLOWED[class_id].values())
    for _ in range(2000):
        raw = "".join(rng.choice("0123456789ABX") for _ in range(rng.randint(0, 40)))
        masked = n.MASKERS[class_id](raw)
        assert len(masked) == len(raw)
        assert sum(c != "*" for c in masked) <= cap
        revealed = [i for i, c in enumerate(masked) if c != "*"]
        assert all(masked[i] == raw[i] for i in revealed)
        if revealed:       # at least 3 characters always stay hidden (13-digit cards)
            assert len(raw) - len(revealed) >= 3


# -- keyed digest ---------------------------------------------------------------------------

def test_keyed_hash():
    k1, k2 = b"\x01" * 32, b"\x02" * 32
    h = n.keyed_hash(RID, k1)
    assert len(h) == 16 and int(h, 16) >= 0
    assert h == hmac.new(k1, RID.encode(), hashlib.sha256).hexdigest()[:16]
    assert h == n.keyed_hash(RID, k1)                            # stable
    assert h != n.keyed_hash(RID, k2)                            # differs per key
    assert h != n.keyed_hash(make_rid("11010519491231003"), k1)  # differs per value
    assert h != hashlib.sha256(RID.encode()).hexdigest()[:16]    # keyed, not a bare hash
    assert RID not in h and RID[-8:] not in h

"""Validators: valid values of every class (generated here, check digits computed with
python-stdnum and cross-checked against the standards' formulas), and rejects for each
structural rule: checksum, length, date, region prefix, alphabet."""

from __future__ import annotations

import random

import pytest
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.cn import ric, uscc

from classifiers import validators as v
from classifiers.classes import CLASS_BY_ID, RULES

# -- generators and independent reference formulas ------------------------------------------

RID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)     # GB 11643-1999
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"                          # GB 32100-2015
USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))


def ref_rid_check(body17: str) -> str:
    return "10X98765432"[sum(int(c) * w for c, w in zip(body17, RID_WEIGHTS)) % 11]


def ref_uscc_check(body17: str) -> str:
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(body17, USCC_WEIGHTS))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def make_rid(body17: str) -> str:
    # stdnum's calc_check_digit() ignores the last character of its argument: append a dummy.
    check = ric.calc_check_digit(body17 + "0")
    assert check == ref_rid_check(body17)
    return body17 + check


def make_card(body: str) -> str:
    return body + luhn.calc_check_digit(body)


def make_uscc(body17: str) -> str:
    check = uscc.calc_check_digit(body17)
    assert check == ref_uscc_check(body17)
    return body17 + check


def make_iban(country: str, bban: str) -> str:
    return country + std_iban.calc_check_digits(country + "00" + bban) + bban


def mrz_check(field: str) -> str:
    """ICAO 9303 7-3-1 check digit, written independently of the code under test."""
    def value(c: str) -> int:
        return 0 if c == "<" else int(c) if c.isdigit() else ord(c) - ord("A") + 10
    return str(sum(value(c) * (7, 3, 1)[i % 3] for i, c in enumerate(field)) % 10)


def make_mrz(number: str, birth: str = "800101", expiry: str = "300101", personal: str = "<" * 14,
             nationality: str = "CHN", sex: str = "M") -> str:
    num = number.ljust(9, "<")
    pcheck = "<" if personal == "<" * 14 else mrz_check(personal)
    line = (num + mrz_check(num) + nationality + birth + mrz_check(birth) + sex + expiry
            + mrz_check(expiry) + personal + pcheck)
    return line + mrz_check(line[0:10] + line[13:20] + line[21:43])


def other_chars(correct: str, alphabet: str) -> list[str]:
    return [c for c in alphabet if c != correct]


# -- registry --------------------------------------------------------------------------------

def test_validators_cover_every_class_and_rule():
    assert set(v.VALIDATORS) == set(CLASS_BY_ID)
    for rule in RULES:
        assert rule.validator in v.VALIDATORS or callable(getattr(v, rule.validator, None)), rule.validator


# -- resident id -----------------------------------------------------------------------------

def test_reference_formulas_agree_with_stdnum_and_hand_worked_example():
    # Hand-worked: 11010519491231002 -> weighted sum 167, 167 % 11 = 2 -> 'X'.
    assert ref_rid_check("11010519491231002") == "X"
    rng = random.Random(7)
    for _ in range(500):
        body = "".join(rng.choice("0123456789") for _ in range(17))
        assert ric.calc_check_digit(body + "?") == ref_rid_check(body)


def test_stdnum_calc_check_digit_trap_is_not_in_our_validator():
    body = "11010519491231002"
    trap = body + ric.calc_check_digit(body)       # computes over the first 16 digits only
    assert trap[-1] != ref_rid_check(body)         # so this is a wrong number ...
    assert not v.cn_resident_id(trap)              # ... and must be rejected
    assert v.cn_resident_id(body + ref_rid_check(body))


@pytest.mark.parametrize("body", [
    "11010519491231002",        # Beijing, check digit X
    "11010519800101018",        # check digit X
    "44030520000229003",        # leap day in a leap century year
    "65010219000101005",        # first year accepted
    "53010220991231004",        # last year accepted
    "81000019900101011",        # Hong Kong residents' permit
    "82000019850615022",        # Macao residents' permit
    "83000019800101033",        # Taiwan residents' permit
    "71000019700101044",
    "11011219800101055",        # 通州区, created after 1980: stdnum's validate() rejects it
])
def test_resident_id_valid(body):
    assert v.cn_resident_id(make_rid(body))


def test_resident_ids_that_stdnum_validate_rejects_are_accepted():
    # Why the validator does not use ric.validate(): permits and post-birth counties.
    for body in ("83000019800101033", "81000019900101011", "11011219800101055"):
        rid = make_rid(body)
        assert not ric.is_valid(rid)
        assert v.cn_resident_id(rid)


def test_resident_id_every_wrong_check_character_is_rejected():
    for body in ("11010519491231002", "44030520000229003", "83000019800101033"):
        rid = make_rid(body)
        for c in other_chars(rid[-1], "0123456789X"):
            assert not v.cn_resident_id(body + c), body + c


@pytest.mark.parametrize("body", [
    "11010519490230002",        # Feb 30
    "11010519000229002",        # 1900 is not a leap year
    "11010520010229002",        # nor 2001
    "11010519491301002",        # month 13
    "11010519490001002",        # month 00
    "11010519490100002",        # day 00
    "11010519490431002",        # Apr 31
    "11010518991231002",        # year before 1900
    "11010521000101002",        # year after 2099
])
def test_resident_id_bad_date(body):
    assert not v.cn_resident_id(make_rid(body))


@pytest.mark.parametrize("province", ["00", "10", "16", "20", "24", "30", "38", "40", "47", "49",
                                      "55", "60", "66", "70", "72", "80", "84", "88", "90", "99"])
def test_resident_id_bad_province(province):
    assert not v.cn_resident_id(make_rid(province + "010519800101002"))


def test_resident_id_every_listed_province_is_accepted():
    for province in sorted(v.CN_PROVINCES):
        assert v.cn_resident_id(make_rid(province + "010519800101002")), province
    assert len(v.CN_PROVINCES) == 35


def test_resident_id_wrong_length_and_characters():
    rid = make_rid("11010519491231002")
    assert not v.cn_resident_id(rid[:-1])
    assert not v.cn_resident_id(rid + "1")
    assert not v.cn_resident_id(rid[:-1] + "x")                  # not normalized
    assert not v.cn_resident_id("")
    body = "11010519800101018"[:-1]
    arabic = body[:16].translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")) + body[16:]
    assert not v.cn_resident_id(arabic + ref_rid_check(body))      # non-ASCII digits
    assert not v.cn_resident_id("1101051949123100 X")


def test_resident_id_legacy():
    assert v.cn_resident_id_legacy("110105491231002")
    assert v.cn_resident_id_legacy("440305960229003")               # 1996-02-29
    assert v.cn_resident_id_legacy("810000000101001")
    assert not v.cn_resident_id_legacy("810000000229001")           # 1900 was not a leap year


def test_resident_id_legacy_rejects():
    assert not v.cn_resident_id_legacy("110105490230002")           # Feb 30
    assert not v.cn_resident_id_legacy("110105491301002")           # month 13
    assert not v.cn_resident_id_legacy("110105491200002")           # day 00
    assert not v.cn_resident_id_legacy("000105491231002")           # province
    assert not v.cn_resident_id_legacy("910105491231002")
    assert not v.cn_resident_id_legacy("11010549123100")            # 14 digits
    assert not v.cn_resident_id_legacy("1101054912310021")          # 16 digits
    assert not v.cn_resident_id_legacy("11010549123100X")


# -- payment cards ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "411111111111",                 # Visa, 13 digits
    "411111111111111",              # Visa, 16
    "222100000000001",              # Mastercard 2-series, lower end
    "272099999999999",              # Mastercard 2-series, upper end
    "220012345678901",              # Mir
    "510510510510510",              # Mastercard 5-series
    "34000000000000",               # Amex, 15
    "37144963539843",               # Amex, 15
    "353011133330000",              # JCB
    "601111111111111",              # Discover
    "622848012345678",              # UnionPay, 16
    "621700123456789012",           # UnionPay, 19
])
def test_payment_card_valid(body):
    card = make_card(body)
    assert 13 <= len(card) <= 19
    assert v.payment_card(card)


def test_payment_card_every_wrong_check_digit_is_rejected():
    for body in ("411111111111111", "222100000000001", "621700123456789012"):
        card = make_card(body)
        for c in other_chars(card[-1], "0123456789"):
            assert not v.payment_card(body + c)


@pytest.mark.parametrize("body", ["200012345678901", "220512345678901", "222012345678901",
                                  "272112345678901", "299912345678901"])
def test_payment_card_unassigned_2_series_rejected(body):
    assert not v.payment_card(make_card(body))


@pytest.mark.parametrize("first", "01789")
def test_payment_card_implausible_first_digit_rejected(first):
    assert not v.payment_card(make_card(first + "11111111111111"))


def test_payment_card_wrong_length_rejected():
    assert not v.payment_card(make_card("41111111111"))                 # 12 digits
    assert not v.payment_card(make_card("4111111111111111111"))         # 20 digits
    assert v.payment_card(make_card("411111111111111111"))              # 19: the upper bound


def test_payment_card_all_same_digit_rejected():
    # These pass Luhn (and 2222... lies in the Mastercard range): only the repeat rule stops them.
    for filler in ("6666666666666", "4444444444444444" + "4", "22222222222222222", "8888888888888888"):
        assert luhn.is_valid(filler)
    assert not v.payment_card("6666666666666")
    assert not v.payment_card("44444444444444444")
    assert not v.payment_card("22222222222222222")


def test_payment_card_rejects_non_digits():
    card = make_card("411111111111111")
    assert not v.payment_card(card[:4] + " " + card[4:])
    assert not v.payment_card(card[:-1] + "X")


def test_unionpay_unchecked():
    good = make_card("622848012345678")
    non_luhn = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert v.unionpay_unchecked(non_luhn)
    assert v.unionpay_unchecked("8171999927660000")
    assert v.unionpay_unchecked("6217001234567890123")                  # 19
    assert not v.unionpay_unchecked("622848012345678")                  # 15
    assert not v.unionpay_unchecked("62170012345678901234")             # 20
    assert not v.unionpay_unchecked("6317001234567890")                 # prefix 63
    assert not v.unionpay_unchecked("8017001234567890")                 # prefix 80
    assert not v.unionpay_unchecked("621700123456789A")


# -- mobile ----------------------------------------------------------------------------------

@pytest.mark.parametrize("number", [
    "13012345678", "13812345678", "13912345678", "14512345678", "14712345678", "15012345678",
    "15312345678", "15912345678", "16212345678", "16512345678", "16612345678", "16712345678",
    "17012345678", "17312345678", "17512345678", "17812345678", "17400012345", "17405123456",
    "18012345678", "18912345678", "19012345678", "19112345678", "19212345678", "19312345678",
    "19512345678", "19612345678", "19712345678", "19812345678", "19912345678",
])
def test_cn_mobile_valid(number):
    assert v.cn_mobile(number)


@pytest.mark.parametrize("number", [
    "19412345678",                          # 194 not issued
    "14012345678", "14412345678",           # 140-144: 13-digit IoT numbers
    "14612345678", "14812345678",
    "15412345678",
    "16012345678", "16112345678", "16312345678", "16812345678",
    "17406123456", "17412345678",           # 174 only 1740[0-5]
    "17912345678",
    "12012345678", "11012345678", "10012345678", "20012345678",
    "1381234567", "138123456789",           # 10 and 12 digits
    "138-1234-5678", "+8613812345678",      # not normalized
])
def test_cn_mobile_rejects(number):
    assert not v.cn_mobile(number)


# -- e-mail ----------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "j.doe@example.com",
    "zhang.san+tag@mail.example.com.cn",
    "a_b%c-d@sub-domain.example.org",
    "x1@example.io",
    "a@b.co",
    "user@example.technology",
    "l" * 64 + "@example.com",
    "u@" + "d" * 63 + ".com",
    "u@example." + "a" * 24,
    "John.Doe@example.com",
])
def test_email_valid(address):
    assert v.email(address)


@pytest.mark.parametrize("suffix", sorted(v.ASSET_SUFFIXES))
def test_email_asset_file_names_rejected(suffix):
    assert not v.email(f"logo@2x.{suffix}")
    assert not v.email(f"logo@2x.{suffix.upper()}")
    assert not v.email(f"icon@static.cdn.{suffix}")


def test_email_asset_rule_is_what_rejects_them():
    # Same shape with a real TLD passes, so the suffix list (not the syntax) rejects the assets.
    assert v.email("logo@2x.pn")
    assert v.email("icon@static.cdn.com")


def test_email_brief_assets_listed():
    for s in ("png", "jpg", "jpeg", "gif", "svg", "webp", "js", "css", "ico", "map", "json", "xml",
              "html", "woff", "woff2", "ttf"):
        assert s in v.ASSET_SUFFIXES


@pytest.mark.parametrize("address", [
    ".a@example.com", "a.@example.com", "a..b@example.com",
    "@example.com", "a@", "a@example", "a@@example.com", "a@b@example.com",
    "a@-example.com", "a@example-.com", "a@exa_mple.com", "a@.example.com", "a@example..com",
    "a@example.c", "a@example.c0m", "a@example.123",
    "l" * 65 + "@example.com",
    "u@" + "d" * 64 + ".com",
    "u@example." + "a" * 25,
    "a b@example.com", "a@exa mple.com", "张三@example.com",
])
def test_email_rejects(address):
    assert not v.email(address)


# -- unified social credit code --------------------------------------------------------------

def test_uscc_reference_formula_agrees_with_stdnum():
    rng = random.Random(11)
    for _ in range(500):
        body = "".join(rng.choice(USCC_ALPHABET) for _ in range(17))
        assert uscc.calc_check_digit(body) == ref_uscc_check(body)


@pytest.mark.parametrize("body", [
    "91350211M000100Y4",
    "91110000100000000",
    "12100000400012345",
    "51440300MJL123456",
    "93440300MA5D12345",
])
def test_uscc_valid(body):
    assert v.cn_uscc(make_uscc(body))


@pytest.mark.parametrize("body", ["Y1110000MA0012345", "N2440300MA5D12345", "A1100000MB1234567"])
def test_uscc_letter_authorities_accepted_though_stdnum_validate_rejects(body):
    code = make_uscc(body)
    assert not uscc.is_valid(code)
    assert v.cn_uscc(code)


def test_uscc_every_wrong_check_character_is_rejected():
    for body in ("91350211M000100Y4", "Y1110000MA0012345"):
        code = make_uscc(body)
        for c in other_chars(code[-1], USCC_ALPHABET):
            assert not v.cn_uscc(body + c)


@pytest.mark.parametrize("body", [
    "01350211M000100Y4", "B1350211M000100Y4", "X1350211M000100Y4",    # authority
    "9135A211M000100Y4", "91350A11M000100Y4",                         # region not digits
])
def test_uscc_bad_structure_with_valid_checksum(body):
    assert not v.cn_uscc(body + ref_uscc_check(body))


@pytest.mark.parametrize("bad", "IOSVZ")
def test_uscc_forbidden_letters(bad):
    code = make_uscc("91350211M000100Y4")
    for pos in (1, 8, 12, 17):
        assert not v.cn_uscc(code[:pos] + bad + code[pos + 1:])


def test_uscc_wrong_length_and_case():
    code = make_uscc("91350211M000100Y4")
    assert not v.cn_uscc(code[:-1])
    assert not v.cn_uscc(code + "0")
    assert not v.cn_uscc(code.lower())


# -- IBAN ------------------------------------------------------------------------------------

IBAN_BBANS = [("DE", "370400440532013000"), ("GB", "NWBK60161331926819"), ("NL", "ABNA0417164300"),
              ("FR", "20041010050500013M02606"), ("CH", "00762011623852957")]


@pytest.mark.parametrize("country, bban", IBAN_BBANS)
def test_iban_valid(country, bban):
    assert v.iban(make_iban(country, bban))


@pytest.mark.parametrize("country, bban", IBAN_BBANS)
def test_iban_wrong_check_digits(country, bban):
    good = make_iban(country, bban)
    for cd in ("00", "01", "99", f"{(int(good[2:4]) + 1) % 100:02d}"):
        if cd != good[2:4]:
            assert not v.iban(country + cd + bban)


def test_iban_wrong_country_length_and_unknown_country():
    assert not v.iban(make_iban("DE", "37040044053201300"))             # DE is 22 chars, this 21
    assert not v.iban(make_iban("DE", "3704004405320130001"))
    assert not v.iban(make_iban("XX", "370400440532013000"))
    assert not v.iban(make_iban("NL", "1234" + "0417164300"))          # NL bank code is letters


def test_iban_not_normalized_rejected():
    good = make_iban("DE", "370400440532013000")
    assert not v.iban(good.lower())
    assert not v.iban(good[:4] + " " + good[4:])


# -- passport --------------------------------------------------------------------------------

@pytest.mark.parametrize("number", [
    "E12345678", "EA1234567", "EH1234567", "EZ1234567", "G12345678", "141234567", "151234567",
    "PE1234567", "SE1234567", "DE1234567", "K12345678", "H12345678", "MA1234567",
])
def test_cn_passport_valid(number):
    assert v.cn_passport(number)


@pytest.mark.parametrize("number", [
    "EI1234567", "EO1234567", "E1234567", "E123456789", "EA123456", "131234567", "161234567",
    "AE1234567", "MB1234567", "ea1234567", "G1234567", "K1234567X", "", "PE12345678",
])
def test_cn_passport_rejects(number):
    assert not v.cn_passport(number)


def test_mrz_check_digit_hand_worked():
    # E=14: 14*7 + 1*3 + 2*1 + 3*7 + 4*3 + 5*1 + 6*7 + 7*3 + 8*1 = 212 -> 2
    assert mrz_check("E12345678") == "2"
    # 8*7 + 0 + 0 + 1*7 + 0 + 1*1 = 64 -> 4
    assert mrz_check("800101") == "4"
    assert mrz_check("<<<<<<<<<<<<<<") == "0"


@pytest.mark.parametrize("line", [
    make_mrz("E12345678"),
    make_mrz("EA1234567", birth="000229", expiry="341231", sex="F"),
    make_mrz("G12345678", personal="ZE184226B<<<<<"),
    make_mrz("K1234567", nationality="CHN", sex="<"),            # 8-char number padded with '<'
])
def test_mrz_valid(line):
    assert len(line) == 44
    assert v.mrz_passport_line(line) == line[:9].rstrip("<")


def test_mrz_personal_check_may_be_zero_for_empty_field():
    line = make_mrz("E12345678")
    zero = line[:42] + "0"
    zero += mrz_check(zero[0:10] + zero[13:20] + zero[21:43])
    assert v.mrz_passport_line(zero) == "E12345678"


@pytest.mark.parametrize("pos", [9, 19, 27, 42, 43])
def test_mrz_every_wrong_check_digit_is_rejected(pos):
    line = make_mrz("EA1234567", personal="ZE184226B<<<<<")
    for c in other_chars(line[pos], "0123456789"):
        assert v.mrz_passport_line(line[:pos] + c + line[pos + 1:]) is None, (pos, c)


def test_mrz_composite_covers_the_fields_with_their_own_checks_fixed():
    # Change a field and repair its own check digit: only the composite can catch it. (Not every
    # such change: e.g. in the birth field a change at offsets 1, 2, 4, 5 plus the repaired
    # check cancels out mod 10 by the weight alignment, so the changes here are at offset 0.)
    line = make_mrz("EA1234567", personal="ZE184226B<<<<<")
    for field_start, field_end, new in ((0, 9, "EB1234567"), (13, 19, "900101"), (21, 27, "400101"),
                                        (28, 42, "ZE184226C<<<<<")):
        changed = line[:field_start] + new + mrz_check(new) + line[field_end + 1:]
        assert len(changed) == 44
        assert v.mrz_passport_line(changed) is None, new
        fixed = changed[:43] + mrz_check(changed[0:10] + changed[13:20] + changed[21:43])
        assert v.mrz_passport_line(fixed) == fixed[:9].rstrip("<")


def test_mrz_fields_outside_the_composite_do_not_affect_it():
    line = make_mrz("EA1234567")
    assert v.mrz_passport_line(line[:10] + "HKG" + line[13:]) == "EA1234567"
    assert v.mrz_passport_line(line[:20] + "F" + line[21:]) == "EA1234567"


def test_mrz_rejects():
    line = make_mrz("EA1234567")
    assert v.mrz_passport_line(line[:-1]) is None                               # 43 chars
    assert v.mrz_passport_line(line + "0") is None                              # 45 chars
    assert v.mrz_passport_line(line.lower()) is None
    assert v.mrz_passport_line(make_mrz("EA1234567", birth="801301")) is None   # month 13
    assert v.mrz_passport_line(make_mrz("EA1234567", expiry="300230")) is None  # Feb 30
    assert v.mrz_passport_line(make_mrz("EA12<4567")) is None                   # filler inside the number
    assert v.mrz_passport_line(make_mrz("<<<<<<<<<")) is None                   # no number
    # A '<' personal check is only allowed when the personal number field is empty.
    filled = make_mrz("EA1234567", personal="ZE184226B<<<<<")
    dashed = filled[:42] + "<"
    dashed += mrz_check(dashed[0:10] + dashed[13:20] + dashed[21:43])
    assert v.mrz_passport_line(dashed) is None


def test_own_luhn_agrees_with_stdnum():
    rng = random.Random(11)
    for length in range(1, 25):
        for _ in range(400):
            digits = "".join(rng.choice("0123456789") for _ in range(length))
            assert v.luhn_ok(digits) == luhn.is_valid(digits), digits


@pytest.mark.parametrize("code, ok", [
    ("91350211M000100Y4", True),
    ("94350211M000100Y4", False),     # 9 工商 has entity types 1-3 only
    ("Y2110000MA0012345", False),     # Y 其他 is always 1
    ("36350211M000100Y4", False),     # 3 司法行政: 1-5 and 9
    ("91200211M000100Y4", False),     # region 20 is no province
    ("91100000100003962", True),      # national-level registration (region 100000)
])
def test_uscc_authority_entity_type_and_region_tables(code, ok):
    assert v.cn_uscc(make_uscc(code)) is ok


def test_own_uscc_check_agrees_with_stdnum_and_the_reference():
    rng = random.Random(13)
    for _ in range(3000):
        body = "".join(rng.choice(USCC_ALPHABET) for _ in range(17))
        assert v.uscc_check(body) == uscc.calc_check_digit(body) == ref_uscc_check(body)

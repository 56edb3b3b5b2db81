"""Undeclared UTF-16: recognised from the first bytes, transcoded incrementally, and never guessed
for binary data — unit level (agent.apps.charsets) and through AppSession into the classifier."""

from __future__ import annotations

import base64
import codecs
import random
import struct
from collections import Counter

import pytest
from stdnum.cn import ric

from agent.apps.charsets import SNIFF_BYTES, Utf16Text, utf16_codec, utf16_to_utf8
from agent.apps.session import AppSession
from agent.reassembly import TOCLIENT, TOSERVER
from classifiers.engine import Engine
from classifiers.findings import FindingLimits, Findings

BODY = "11010519900307123"
RID = BODY + ric.calc_check_digit(BODY + "0")
MOBILE = "13912345678"
TEXT = f"姓名：张三，身份证号码：{RID}，手机 {MOBILE}，邮箱 zhang.san@example.com\n"
ENCODINGS = {                         # name -> bytes on the wire
    "le": TEXT.encode("utf-16-le"),
    "be": TEXT.encode("utf-16-be"),
    "le-bom": b"\xff\xfe" + TEXT.encode("utf-16-le"),
    "be-bom": b"\xfe\xff" + TEXT.encode("utf-16-be"),
}
EXPECTED = {"cn_resident_id": 1, "cn_mobile": 1, "email": 1}


def binaries() -> dict[str, bytes]:
    """Binary data with many NULs that must pass through untouched."""
    rng = random.Random(5)
    return {
        "int32-array": struct.pack("<256i", *(rng.randrange(0, 5000) for _ in range(256))),
        "int16-small": struct.pack("<256h", *(rng.randrange(0, 32) for _ in range(256))),
        "half-nul-random": bytes(b if rng.random() < 0.5 else 0 for b in rng.randbytes(4096)),
        "records": b"".join(struct.pack("<16sIH", f"user{i}".encode(), i * 7, i) for i in range(100)),
        "pe-like": b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(48) + b"PE\x00\x00" + rng.randbytes(2000),
        "utf16-strings-in-struct": b"".join("C:\\data\\f{}.txt".format(i).encode("utf-16-le") + b"\x00\x00"
                                            + struct.pack("<Q", i) for i in range(50)),
        "random": rng.randbytes(4096),
    }


# -- detection ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_utf16_recognised(name: str) -> None:
    want = {"le": "utf-16-le", "be": "utf-16-be", "le-bom": "utf-16", "be-bom": "utf-16"}[name]
    assert utf16_codec(ENCODINGS[name][:SNIFF_BYTES]) == want


def test_ascii_only_and_latin_utf16_recognised() -> None:
    assert utf16_codec("ID 110105199003071234, tel 13912345678".encode("utf-16-le")[:SNIFF_BYTES]) == "utf-16-le"
    assert utf16_codec("Müller, Straße 5, 10115 Berlin".encode("utf-16-be")[:SNIFF_BYTES]) == "utf-16-be"


@pytest.mark.parametrize("text", [TEXT.encode("utf-8"), TEXT.encode("gbk"), b"plain ascii text " * 8,
                                  b"\xef\xbb\xbf" + TEXT.encode("utf-8")])
def test_other_text_not_utf16(text: bytes) -> None:
    assert utf16_codec(text[:SNIFF_BYTES]) is None
    assert run_text([text]) == text


@pytest.mark.parametrize("name", sorted(binaries()))
def test_binary_with_nuls_not_utf16(name: str) -> None:
    data = binaries()[name]
    assert utf16_codec(data[:SNIFF_BYTES]) is None
    assert run_text([data[:100], data[100:]]) == data
    assert utf16_to_utf8(data) == data


def test_short_texts_pass_through() -> None:
    assert run_text([b"ab"]) == b"ab"
    assert run_text([b"\xff"]) == b"\xff"
    assert run_text(["12".encode("utf-16-le")]) == "12".encode("utf-16-le")   # too short to judge


# -- transcoding, every split point -----------------------------------------------------------

def run_text(pieces: list[bytes]) -> bytes:
    text = Utf16Text()
    return b"".join(text.feed(p) for p in pieces) + text.close()


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_transcoded_whatever_the_split(name: str) -> None:
    wire = ENCODINGS[name]
    want = TEXT.encode("utf-8")
    for i in range(len(wire) + 1):
        assert run_text([wire[:i], wire[i:]]) == want, i
    assert run_text([wire[i:i + 1] for i in range(len(wire))]) == want


def test_surrogate_pair_split_across_writes() -> None:
    text = "手机 13912345678 😀 结束 " * 3
    wire = text.encode("utf-16-le")
    for i in range(len(wire) + 1):
        assert run_text([wire[:i], wire[i:]]) == text.encode("utf-8"), i


# -- through the session into the classifier ---------------------------------------------------

@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def session(engine: Engine) -> tuple[AppSession, Findings, Counter[str]]:
    anomalies: Counter[str] = Counter()
    findings = Findings(FindingLimits(), {}, b"k" * 16)
    return AppSession(anomalies, TOSERVER, engine.stream(findings.add), strict=True), findings, anomalies


def counts(findings: Findings) -> dict[str, int]:
    return {cls: findings.count(cls) for cls in findings.by_class}


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_raw_stream_values_found_at_every_split(engine: Engine, name: str) -> None:
    wire = ENCODINGS[name]
    for i in range(len(wire) + 1):
        s, findings, _ = session(engine)
        s.data(TOSERVER, wire[:i])
        s.data(TOSERVER, wire[i:])
        s.finish()
        assert s.app_proto is None and counts(findings) == EXPECTED, (name, i)


def test_binary_with_nuls_still_scanned_as_bytes(engine: Engine) -> None:
    """Binary data is not transcoded: ASCII values inside it are found as before."""
    data = binaries()["int32-array"][:200] + f" {MOBILE} ".encode() + binaries()["records"]
    s, findings, _ = session(engine)
    s.data(TOSERVER, data)
    s.finish()
    assert counts(findings) == {"cn_mobile": 1}


def test_raw_stream_after_a_hole_is_sniffed_again(engine: Engine) -> None:
    s, findings, _ = session(engine)
    s.data(TOSERVER, b"\x01\x02 binary start, not text \x00\x00\x00\x00" * 4)
    s.gap(TOSERVER, 1001)
    s.data(TOSERVER, TEXT.encode("utf-16-le"))
    s.finish()
    assert counts(findings) == EXPECTED


def test_http_body_without_charset(engine: Engine) -> None:
    for ctype, wire in (("application/octet-stream", ENCODINGS["le"]), ("text/plain", ENCODINGS["be"]),
                        (None, ENCODINGS["le"])):
        head = b"POST /upload HTTP/1.1\r\nHost: example.com\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n".encode()
        request = head + f"Content-Length: {len(wire)}\r\n\r\n".encode() + wire
        for i in range(len(head), len(request), 7):
            s, findings, _ = session(engine)
            s.data(TOSERVER, request[:i])
            s.data(TOSERVER, request[i:])
            s.data(TOCLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            s.finish()
            assert s.app_proto == "http" and counts(findings) == EXPECTED, (ctype, i)


def test_smtp_part_without_charset(engine: Engine) -> None:
    attachment = base64.encodebytes(ENCODINGS["be"]).replace(b"\n", b"\r\n")
    stream = (b"EHLO me\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
              b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + attachment + b".\r\nQUIT\r\n")
    s, findings, _ = session(engine)
    s.data(TOCLIENT, b"220 mx.example.org ESMTP\r\n")
    s.data(TOSERVER, stream)
    s.finish()
    assert s.app_proto == "smtp"
    assert counts(findings) == {"cn_resident_id": 1, "cn_mobile": 1, "email": 3}   # + the two envelope addresses


def test_datagram_in_utf16(engine: Engine) -> None:
    s, findings, _ = session(engine)
    s.datagram(TOSERVER, ENCODINGS["le-bom"], 40000, 9999)
    s.finish()
    assert counts(findings) == EXPECTED


def _utf16_codec_by_unit(sample: bytes) -> str | None:
    """The sniff's rule written out unit by unit: the oracle for the counting in utf16_codec."""
    if sample[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    n = len(sample) & ~1
    if n < 8:
        return None
    text_bytes = set(range(0x20, 0x7F)) | set(b"\t\n\r")
    le = be = 0
    for a, b in zip(sample[0:n:2], sample[1:n:2]):
        if a == 0 and b == 0:
            return None
        le += b == 0 and a in text_bytes
        be += a == 0 and b in text_bytes
    if le * 4 >= n // 2 and le > 3 * be:
        codec = "utf-16-le"
    elif be * 4 >= n // 2 and be > 3 * le:
        codec = "utf-16-be"
    else:
        return None
    try:     # incremental: a high surrogate at the very end may be the first half of a pair
        text = codecs.getincrementaldecoder(codec)().decode(sample[:n])
    except UnicodeDecodeError:
        return None
    return None if any(ord(c) < 32 and c not in "\t\n\r\f\v" or c == "\x7f" for c in text) else codec


def test_sniff_agrees_with_unit_by_unit_rule_on_random_samples() -> None:
    """Samples drawn to sit near every threshold: mostly text units with NULs on either side,
    some NUL pairs, some random bytes, odd lengths, both orders."""
    rng = random.Random(11)
    verdicts: Counter[str | None] = Counter()
    for _ in range(20_000):
        units = []
        p_le, p_be, p_nul = rng.random(), rng.random() * 0.5, rng.random() * 0.05
        for _ in range(rng.randrange(3, 34)):
            r = rng.random()
            if r < p_nul:
                units.append(b"\x00\x00")
            elif r < p_nul + p_le * 0.6:
                units.append(bytes((rng.choice(b"0123456789 abc\t\x01\x7f"), 0)))
            elif r < p_nul + p_le * 0.6 + p_be * 0.4:
                units.append(bytes((0, rng.choice(b"0123456789 xyz\n"))))
            else:
                units.append(rng.randbytes(2))
        sample = b"".join(units)[:rng.randrange(6, 66)]
        want = _utf16_codec_by_unit(sample)
        assert utf16_codec(sample) == want, sample
        verdicts[want] += 1
    assert verdicts["utf-16-le"] > 100 and verdicts["utf-16-be"] > 100 and verdicts[None] > 100

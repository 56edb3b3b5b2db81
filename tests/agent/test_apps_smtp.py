"""SmtpParser: envelope, DATA/BDAT framing, MIME decoding, STARTTLS, resync, split-point invariance."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Union

import pytest

from agent.apps.http import Chunk
from agent.apps.smtp import SmtpLimits, SmtpParser
from tests.agent.parser_feed import feed_all

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS_MISSING = "third-party pcap corpus not found at ../shared/corpus; see shared/corpus/README.md"

Item = Union[tuple[int, bytes], tuple[str, int, int]]


def run(items: list[Item], close: bool = True, limits: SmtpLimits = SmtpLimits()) -> tuple[list[Chunk], Counter[str]]:
    anomalies: Counter[str] = Counter()
    chunks = feed_all(SmtpParser(anomalies, limits), items, close)
    for c in chunks:
        assert isinstance(c, Chunk) and isinstance(c.data, bytes) and c.data and c.direction == 0
    return chunks, anomalies


def texts(chunks: list[Chunk], kind: str) -> list[bytes]:
    """Concatenated data per part of one kind, in part order."""
    out: dict[int, bytes] = {}
    for c in chunks:
        if c.kind == kind:
            out[c.part] = out.get(c.part, b"") + c.data
    return [out[k] for k in sorted(out)]


def crlf(s: str) -> bytes:
    return s.replace("\n", "\r\n").encode()


SIMPLE = crlf("""EHLO client.example
MAIL FROM:<alice@example.com> SIZE=1234
RCPT TO:<bob@example.org>
DATA
""") + crlf("""From: Alice <alice@example.com>
To: Bob <bob@example.org>
Subject: hello
X-Other: not emitted

line one
..dot-stuffed line

.. two dots
.
QUIT
""")


def test_envelope_headers_and_dot_stuffing() -> None:
    chunks, anomalies = run([(0, SIMPLE)])
    assert texts(chunks, "smtp.envelope") == [b"alice@example.com\n", b"bob@example.org\n"]
    assert texts(chunks, "smtp.header") == [b"Alice <alice@example.com>\nBob <bob@example.org>\nhello\n"]
    assert texts(chunks, "smtp.body") == [b"line one\r\n.dot-stuffed line\r\n\r\n. two dots\r\n"]
    assert not anomalies


def test_lower_case_commands() -> None:
    chunks, _ = run([(0, crlf("mail from: <a@b.c>\nrcpt to:<d@e.f>\ndata\nSubject: x\n\nbody\n.\n"))])
    assert texts(chunks, "smtp.envelope") == [b"a@b.c\n", b"d@e.f\n"]
    assert texts(chunks, "smtp.body") == [b"body\r\n"]


def test_base64_text_attachment() -> None:
    att = base64.encodebytes(b"name,ssn\nJohn,123-45-6789\n").decode()
    msg = crlf(f"""MAIL FROM:<a@b.c>
RCPT TO:<d@e.f>
DATA
From: a@b.c
Subject: report
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XX"

--XX
Content-Type: text/plain; charset=utf-8

see attached
--XX
Content-Type: text/csv; name="people.csv"
Content-Disposition: attachment; filename="people.csv"
Content-Transfer-Encoding: base64

{att}
--XX
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AAECAwQFBgc=
--XX--
.
""")
    chunks, anomalies = run([(0, msg)])
    bodies = texts(chunks, "smtp.body")
    assert bodies == [b"see attached\n", b"name,ssn\nJohn,123-45-6789\n"]
    assert anomalies["app.smtp.binary_part"] == 1


def test_quoted_printable_soft_breaks() -> None:
    msg = crlf("""DATA
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

card 4111 1111 11=
11 1111 caf=E9
.
""")
    chunks, _ = run([(0, msg)])
    assert texts(chunks, "smtp.body") == ["card 4111 1111 1111 1111 café\r\n".encode()]


def test_gb2312_encoded_word_subject_and_gbk_body() -> None:
    subject = "=?gb2312?B?" + base64.b64encode("测试邮件".encode("gb2312")).decode() + "?="
    body = base64.b64encode("身份证号码".encode("gbk")).decode()
    msg = crlf(f"""DATA
Subject: {subject}
From: =?utf-8?Q?Zh=C3=A0ng?= <z@example.cn>
Content-Type: text/plain; charset="gb2312"
Content-Transfer-Encoding: base64

{body}
.
""")
    chunks, _ = run([(0, msg)])
    assert texts(chunks, "smtp.header") == ["测试邮件\nZhàng <z@example.cn>\n".encode()]
    assert texts(chunks, "smtp.body") == ["身份证号码\n".encode()]


def test_utf16_and_nested_message_rfc822() -> None:
    inner = crlf("""Subject: inner subject
From: carol@example.net
Content-Type: multipart/alternative; boundary="in"

--in
Content-Type: text/html; charset=utf-16
Content-Transfer-Encoding: base64

""") + base64.encodebytes("<p>hidden</p>".encode("utf-16")) + crlf("""--in--
""")
    msg = crlf("""DATA
Subject: outer
Content-Type: multipart/mixed; boundary="out"

--out
Content-Type: message/rfc822

""") + inner + crlf("""--out--
.
""")
    chunks, _ = run([(0, msg)])
    assert texts(chunks, "smtp.header") == [b"outer\n", b"inner subject\ncarol@example.net\n"]
    assert texts(chunks, "smtp.body") == [b"<p>hidden</p>\n"]


def test_bdat_chunks_split_across_feeds() -> None:
    message = crlf("Subject: chunked\n\nsecret 987-65-4321\n.\nend\n")
    a, b, c = message[:10], message[10:30], message[30:]
    stream = (crlf("MAIL FROM:<a@b.c>\nRCPT TO:<d@e.f>\n") + f"BDAT {len(a)}\r\n".encode() + a
              + f"BDAT {len(b)}\r\n".encode() + b + f"BDAT {len(c)} LAST\r\n".encode() + c + b"QUIT\r\n")
    # split so that chunk contents span feeds
    feeds = [(0, stream[i:i + 7]) for i in range(0, len(stream), 7)]
    chunks, anomalies = run(feeds)
    assert texts(chunks, "smtp.header") == [b"chunked\n"]
    # BDAT has no dot-stuffing: the "." line is content
    assert texts(chunks, "smtp.body") == [b"secret 987-65-4321\r\n.\r\nend\r\n"]
    assert texts(chunks, "smtp.envelope") == [b"a@b.c\n", b"d@e.f\n"]
    assert not anomalies


def test_pipelined_commands_in_one_feed() -> None:
    stream = crlf("MAIL FROM:<a@b.c>\nRCPT TO:<x@y.z>\nRCPT TO:<p@q.r> NOTIFY=NEVER\nDATA\n")
    chunks, _ = run([(0, stream), (1, crlf("250 ok\n250 ok\n250 ok\n354 go\n")),
                     (0, crlf("Subject: s\n\nb\n.\nMAIL FROM:<>\nRCPT TO:<z@z.z>\nRSET\n"))])
    assert texts(chunks, "smtp.envelope") == [b"a@b.c\n", b"x@y.z\n", b"p@q.r\n", b"z@z.z\n"]
    assert texts(chunks, "smtp.body") == [b"b\r\n"]


def test_data_refused_goes_back_to_commands() -> None:
    chunks, anomalies = run([(0, crlf("MAIL FROM:<a@b.c>\nDATA\n")), (1, crlf("220 hi\n250 ok\n554 no valid recipients\n")),
                             (0, crlf("RCPT TO:<x@y.z>\nQUIT\n"))])
    assert texts(chunks, "smtp.envelope") == [b"a@b.c\n", b"x@y.z\n"]
    assert not texts(chunks, "smtp.body") and not anomalies


def test_starttls_stops_output() -> None:
    tls = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1" + b"MAIL FROM:<leak@x.y>\r\n"
    items: list[Item] = [(1, crlf("220 mx ESMTP\n")), (0, crlf("EHLO me\n")), (1, crlf("250-mx\n250 STARTTLS\n")),
                         (0, crlf("STARTTLS\n")), (1, crlf("220 go ahead\n")), (0, tls), (1, b"\x16\x03\x03\x00\x10"),
                         (0, crlf("MAIL FROM:<leak@x.y>\n"))]
    chunks, anomalies = run(items)
    assert chunks == []
    assert anomalies["app.smtp.starttls"] == 1 and not anomalies["app.smtp.parse_error"]
    # only the client side seen: the TLS record itself tells
    chunks, anomalies = run([(0, crlf("EHLO me\nSTARTTLS\n")), (0, tls)])
    assert chunks == [] and anomalies["app.smtp.starttls"] == 1
    # refused: commands go on
    chunks, anomalies = run([(0, crlf("STARTTLS\n")), (1, crlf("220 hi\n454 not available\n")),
                             (0, crlf("MAIL FROM:<a@b.c>\n"))])
    assert texts(chunks, "smtp.envelope") == [b"a@b.c\n"] and not anomalies["app.smtp.starttls"]


def test_auth_responses_not_commands() -> None:
    chunks, anomalies = run([(0, crlf("AUTH LOGIN\ndXNlcg==\ncGFzcw==\nMAIL FROM:<a@b.c>\n"))])
    assert texts(chunks, "smtp.envelope") == [b"a@b.c\n"] and not anomalies


def test_garbage_and_gap_resync() -> None:
    chunks, anomalies = run([(0, b"\x00\x01\x02garbage\r\nSubject: not a command\r\nMAIL FROM:<a@b.c>\r\n")])
    assert texts(chunks, "smtp.envelope") == [b"a@b.c\n"]
    assert anomalies["app.smtp.parse_error"] == 1
    items: list[Item] = [(0, crlf("DATA\nSubject: lost\n\npart")), ("gap", 0, 100),
                         (0, crlf("more body\n.\nRCPT TO:<r@s.t>\nDATA\nSubject: kept\n\nok\n.\n"))]
    chunks, anomalies = run(items)
    assert anomalies["app.smtp.gap"] == 1 and not anomalies["app.smtp.parse_error"]
    assert texts(chunks, "smtp.header") == [b"kept\n"]
    assert texts(chunks, "smtp.envelope") == [b"r@s.t\n"]


def test_message_limit_and_close() -> None:
    body = b"x" * 5000
    chunks, anomalies = run([(0, b"DATA\r\nSubject: big\r\n\r\n" + body + b"\r\n.\r\n")], limits=SmtpLimits(message_bytes=1000))
    assert anomalies["limit.smtp_message"] == 1
    assert texts(chunks, "smtp.header") == [b"big\n"]
    assert len(texts(chunks, "smtp.body")[0]) < 1000
    # unterminated message: parsed at close()
    chunks, _ = run([(0, crlf("DATA\nSubject: cut\n\nname John\n."))])
    assert texts(chunks, "smtp.body") == [b"name John\r\n"]



def flat_parts(n: int) -> bytes:
    parts = "".join(f"--b\nContent-Type: text/plain\n\nrow {i}: 139{i:08d}\n" for i in range(n))
    return crlf("DATA\nSubject: many\nContent-Type: multipart/mixed; boundary=b\n\n" + parts + "--b--\n.\n")


def nested_parts(depth: int) -> bytes:
    head = "".join(f'Content-Type: multipart/mixed; boundary="n{i}"\n\n--n{i}\n' for i in range(depth))
    tail = "".join(f"--n{i}--\n" for i in reversed(range(depth)))
    return crlf("DATA\nSubject: deep\n" + head + "Content-Type: text/plain\n\nleaf 13912345678\n" + tail
                + "after the nest 13800000000\n.\n")


def test_mime_parts_limit_cuts_before_parsing_and_passes_the_rest_through() -> None:
    chunks, anomalies = run([(0, flat_parts(5))], limits=SmtpLimits(mime_parts=3))
    bodies = texts(chunks, "smtp.body")
    assert bodies[:3] == [b"row 0: 13900000000\n", b"row 1: 13900000001\n", b"row 2: 13900000002\n"]
    assert anomalies == Counter({"limit.mime_parts": 1})
    rest = bodies[3]                           # undecoded, but the scanner still sees the values
    assert rest.startswith(b"--b\r\n") and b"13900000003" in rest and b"13900000004" in rest
    chunks, anomalies = run([(0, flat_parts(3))], limits=SmtpLimits(mime_parts=3))
    assert len(texts(chunks, "smtp.body")) == 3 and not anomalies


def test_mime_depth_limit() -> None:
    chunks, anomalies = run([(0, nested_parts(6))], limits=SmtpLimits(mime_depth=4))
    assert anomalies == Counter({"limit.mime_depth": 1})
    bodies = b"".join(texts(chunks, "smtp.body"))
    assert b"leaf 13912345678" in bodies and b"13800000000" in bodies
    chunks, anomalies = run([(0, nested_parts(4))], limits=SmtpLimits(mime_depth=4))
    assert texts(chunks, "smtp.body") == [b"leaf 13912345678\n"] and not anomalies


def test_hostile_nesting_and_part_floods_with_default_limits() -> None:
    """Nesting the stdlib parser cannot survive (RecursionError near 1000 levels) and more parts
    than it can parse quickly: both cut at the default limits, nothing raised, values kept."""
    chunks, anomalies = run([(0, nested_parts(1500))])
    assert anomalies == Counter({"limit.mime_depth": 1})
    bodies = b"".join(texts(chunks, "smtp.body"))
    assert b"13912345678" in bodies and b"13800000000" in bodies
    chunks, anomalies = run([(0, flat_parts(3000))])
    assert anomalies == Counter({"limit.mime_parts": 1})
    bodies = texts(chunks, "smtp.body")
    assert len(bodies) == SmtpLimits().mime_parts + 1
    assert b"13900002999" in bodies[-1]


def test_dash_lines_in_text_are_not_parts() -> None:
    sql = "".join(f"-- step {i}\nINSERT INTO t VALUES ({i});\n" for i in range(50))
    msg = crlf("DATA\nContent-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\nhi\n"
               "--x\nContent-Type: text/x-sql\nContent-Disposition: attachment; filename=d.sql\n\n"
               f"{sql}--x\nContent-Type: text/csv\n\n{sql}--x--\n.\n")
    chunks, anomalies = run([(0, msg)], limits=SmtpLimits(mime_parts=3, mime_depth=1))
    assert not anomalies["limit.mime_parts"] and not anomalies["limit.mime_depth"]
    assert texts(chunks, "smtp.body")[1:] == [crlf(sql)[:-2] + b"\n"] * 2


def test_encoded_attached_message_counts_in_the_same_limits() -> None:
    inner = crlf("Subject: inner\nContent-Type: multipart/mixed; boundary=i\n\n"
                 + "".join(f"--i\nContent-Type: text/plain\n\ninner {i}\n" for i in range(4)) + "--i--\n")
    msg = crlf("DATA\nSubject: outer\nContent-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: text/plain\n\n"
               "outer\n--o\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n") \
        + base64.encodebytes(inner).replace(b"\n", b"\r\n") + crlf("--o--\n.\n")
    chunks, anomalies = run([(0, msg)], limits=SmtpLimits(mime_parts=4))
    bodies = texts(chunks, "smtp.body")
    # 2 outer parts + 2 inner parts decoded; the inner rest passed through
    assert bodies[:3] == [b"outer\n", b"inner 0\n", b"inner 1\n"]
    assert anomalies == Counter({"limit.mime_parts": 1})
    assert b"inner 2" in bodies[3] and b"inner 3" in bodies[3]
    qp = crlf("DATA\nContent-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: message/rfc822\n"
              "Content-Transfer-Encoding: quoted-printable\n\nSubject: caf=C3=A9\n\nFrom a caf=C3=A9 =\nbody\n--o--\n.\n")
    chunks, anomalies = run([(0, qp)])
    assert texts(chunks, "smtp.header") == ["café\n".encode()]
    assert texts(chunks, "smtp.body") == ["From a café body\n".encode()] and not anomalies

ALL = SIMPLE + crlf("""MAIL FROM:<a@b.c>
RCPT TO:<d@e.f>
DATA
Subject: =?gb2312?B?suLK1A==?=
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

soft=
 break =E2=9C=93
--b
Content-Type: application/json
Content-Transfer-Encoding: base64

eyJzc24iOiAiMTIzLTQ1LTY3ODkifQ==
--b--
.
""") + b"BDAT 24\r\nSubject: bdat\r\n\r\nhello\r\nBDAT 0 LAST\r\n"


def test_byte_at_a_time_same_as_one_shot() -> None:
    one, a1 = run([(0, ALL)])
    many, a2 = run([(0, ALL[i:i + 1]) for i in range(len(ALL))])
    assert texts(one, "smtp.body") == texts(many, "smtp.body")
    assert [(c.kind, c.part, c.data) for c in one] == [(c.kind, c.part, c.data) for c in many]
    assert a1 == a2 and not a1
    assert texts(one, "smtp.body")[-3:] == ["soft break ✓\n".encode(), b'{"ssn": "123-45-6789"}\n', b"hello\r\n"]
    assert "测试".encode() + b"\n" in texts(one, "smtp.header")


def test_every_split_point() -> None:
    one, _ = run([(0, ALL)])
    want = [(c.kind, c.part, c.data) for c in one]
    for i in range(0, len(ALL), 3):
        got, _ = run([(0, ALL[:i]), (0, ALL[i:])])
        assert [(c.kind, c.part, c.data) for c in got] == want, i


# -- third-party corpus -----------------------------------------------------------------------

def _streams(pcap: Path) -> list[list[tuple[int, bytes]]]:
    """Each SMTP TCP stream of a capture as [(direction, bytes)] in tshark's follow order."""
    ids = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "tcp.stream",
                          "-Y", "(tcp.port == 25 or tcp.port == 587 or tcp.port == 2525) and tcp.len > 0"],
                         capture_output=True, text=True, check=True).stdout.split()
    out = []
    for sid in sorted(set(ids), key=int):
        text = subprocess.run(["tshark", "-r", str(pcap), "-q", "-z", f"follow,tcp,raw,{sid}"],
                              capture_output=True, text=True, check=True).stdout
        feeds: list[tuple[int, bytes]] = []
        body = text.split("=" * 67)[1] if text.count("=" * 67) >= 2 else text
        for line in body.splitlines():
            if not line.strip() or ":" in line:
                continue
            direction = 1 if line.startswith("\t") else 0
            try:
                feeds.append((direction, bytes.fromhex(line.strip())))
            except ValueError:
                continue
        out.append(feeds)
    return out


def test_corpus_smtp_captures() -> None:
    folder = CORPUS / "smtp"
    if not (CORPUS / "MANIFEST.tsv").is_file() or not folder.is_dir():
        pytest.skip(CORPUS_MISSING)
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    results: dict[str, list[Chunk]] = {}
    for pcap in sorted(folder.glob("*.pcap")):
        chunks_all: list[Chunk] = []
        for feeds in _streams(pcap):
            for client_only in (False, True):
                items: list[Item] = [f for f in feeds if not client_only or f[0] == 0]
                chunks, _ = run(items)
                if client_only:
                    chunks_all += chunks
        results[pcap.name] = chunks_all
    subjects = texts(results["ak-smtp-subject-gb2312-b.pcap"], "smtp.header")
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in s.decode("utf-8")) for s in subjects), subjects
    assert texts(results["zk-smtp-starttls.pcap"], "smtp.body") == []

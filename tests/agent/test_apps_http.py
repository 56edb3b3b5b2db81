"""HttpParser: framing, codings, content types, charsets, resync, limits, and split-point invariance."""

from __future__ import annotations

import base64
import gzip
import time
import tracemalloc
import zlib
from collections import Counter
from typing import Union

import pytest

import agent.apps.http as http_mod
from agent.apps.http import Chunk, HttpLimits, HttpParser
from tests.agent.parser_feed import feed_all

try:
    import brotli
except ImportError:  # pragma: no cover
    brotli = None

# A conversation: (direction, bytes) feeds, ("gap", direction, nbytes), and close() at the end.
Item = Union[tuple[int, bytes], tuple[str, int, int]]


def run(items: list[Item], limits: HttpLimits | None = None, close: bool = True) -> tuple[list[Chunk], Counter[str]]:
    anomalies: Counter[str] = Counter()
    return feed_all(HttpParser(anomalies, limits or HttpLimits()), items, close), anomalies


def joined(chunks: list[Chunk]) -> dict[tuple[int, str, int], bytes]:
    out: dict[tuple[int, str, int], bytes] = {}
    for c in chunks:
        assert isinstance(c.data, bytes) and c.data
        key = (c.direction, c.kind, c.part)
        out[key] = out.get(key, b"") + c.data
    return out


def content(items: list[Item], kind: str = "http.body", direction: int = 0, **kw) -> list[bytes]:
    """The concatenated data of each part of one kind, in part order."""
    chunks, _ = run(items, **kw)
    j = joined(chunks)
    return [j[k] for k in sorted(j) if k[0] == direction and k[1] == kind]


def req(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


def nl(text: bytes) -> bytes:
    """A text as emitted: the parser ends every text with a line break."""
    return text if text.endswith(b"\n") else text + b"\n"


def nls(texts: list[bytes]) -> list[bytes]:
    return [nl(t) for t in texts]


def post(body: bytes, headers: str = "") -> bytes:
    """A POST request with Content-Length; `headers` are lines ending in newlines."""
    return req(f"POST / HTTP/1.1\n{headers}Content-Length: {len(body)}\n", body)


def chunked(*pieces: bytes, ext: bytes = b"", trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces)
    return out + b"0\r\n" + trailer + b"\r\n"


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


# -- inputs shared by the individual tests and the split-point test -----------------------------

JSON_BODY = (b'{"name":"\\u5f20\\u4e09","emoji":"\\ud83d\\ude00","q":"a\\"b\\\\c\\/d\\n",'
             b'"id":"110101199003077777"}')
JSON_DECODED = '{"name":"张三","emoji":"😀","q":"a"b\\c/d\n","id":"110101199003077777"}'.encode()

FORM_BODY = b"name=%E5%BC%A0+san&phone=%2B86+138%2000138000&email=a%40b.com"
FORM_DECODED = "name=张 san&phone=+86 138 00138000&email=a@b.com".encode()

CSV = "姓名,身份证\n张三,110101199003077777\n李四,110101199003071234\n".encode()

MULTIPART = (
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="comment"\r\n\r\n'
    b"call me at 13800138000\r\n"
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="file"; filename="people.csv"\r\n'
    b"Content-Type: text/csv\r\n\r\n" + CSV + b"\r\n"
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="doc"; filename="id.txt"\r\n'
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes("身份证 110101199003077777".encode()) +
    b"\r\n--XyZ\r\n"
    b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n"
    b"--inner\r\nContent-Type: application/json\r\n\r\n{\"n\":\"\\u674e\\u56db\"}\r\n"
    b"--inner\r\nContent-Type: text/plain\r\n\r\ninner text\r\n"
    b"--inner--\r\n"
    b"\r\n--XyZ--\r\nepilogue is ignored\r\n"
)


def gbk_form() -> bytes:
    # percent-encoded GBK bytes, as a browser on a GBK page sends them (and one raw GBK value)
    enc = "".join("%%%02X" % b for b in "张三".encode("gbk")).encode()
    body = b"name=" + enc + b"&city=" + "北京".encode("gbk")
    return req(f"POST /gbk HTTP/1.1\nContent-Type: application/x-www-form-urlencoded; charset=gbk\n"
               f"Content-Length: {len(body)}\n", body)


def utf16_json() -> bytes:
    body = b"\xff\xfe" + '{"name":"张三","e":"\\ud83d\\ude00"}'.encode("utf-16-le")
    return req(f"POST /u16 HTTP/1.1\nContent-Type: application/json\nContent-Length: {len(body)}\n", body)


JSON_FAST = b'{"n":"\\u5f20\\u4e09","e":"\\ud83d\\ude00","q":"\\"x\\"\\n\\/"}\r\n'
MULTIPART_LF = b"--zz\nContent-Type: text/csv\n\na,b\n1,2\n--zz\n\nplain\n--zz--\n"

SCENARIOS: dict[str, list[Item]] = {
    "get_query": [(0, req("GET /s/%E5%BC%A0?name=%E5%BC%A0%E4%B8%89&q=a+b%2Bc HTTP/1.1\nHost: x\n"
                          "Cookie: email=a%40b.com\nReferer: http://r/?id=1+2\nX-Forwarded-For: 10.1.2.3\n"
                          "Authorization: Basic c2VjcmV0\n"))],
    "form": [(0, req(f"POST /f HTTP/1.1\nContent-Type: application/x-www-form-urlencoded\n"
                     f"Content-Length: {len(FORM_BODY)}\n", FORM_BODY))],
    "json_chunked": [(0, req("POST /j HTTP/1.1\nContent-Type: application/json; charset=utf-8\n"
                             "Transfer-Encoding: chunked\n",
                             chunked(JSON_BODY[:23], JSON_BODY[23:40], JSON_BODY[40:], ext=b";name=v;x",
                                     trailer=b"X-Checksum: 1\r\n")))],
    "gzip_in_chunked": [(0, req("POST /g HTTP/1.1\nContent-Type: application/json\nContent-Encoding: gzip\n"
                                "Transfer-Encoding: chunked\n",
                                chunked(*(lambda z: [z[:10], z[10:30], z[30:]])(gzip.compress(JSON_BODY)))))],
    "raw_deflate": [(0, req(f"POST /d HTTP/1.1\nContent-Encoding: deflate\nContent-Type: text/plain\n"
                            f"Content-Length: {len(raw_deflate(CSV))}\n", raw_deflate(CSV)))],
    "zlib_deflate": [(0, req(f"POST /d HTTP/1.1\nContent-Encoding: deflate\n"
                             f"Content-Length: {len(zlib.compress(CSV))}\n", zlib.compress(CSV)))],
    "multipart": [(0, req(f"POST /up HTTP/1.1\nContent-Type: multipart/form-data; boundary=\"XyZ\"\n"
                          f"Content-Length: {len(MULTIPART)}\n", MULTIPART))],
    "gbk_form": [(0, gbk_form())],
    "utf16_json": [(0, utf16_json())],
    "pipelined": [(0, req("GET /a?x=1 HTTP/1.1\n") + req("POST /b HTTP/1.1\nContent-Length: 5\n", b"hello")
                   + req("GET /c?y=%41 HTTP/1.1\n"))],
    "garbage_then_request": [(0, b"\x16\x03\x01garbage 123\r\nGETTING 4567 bytes\r\n\r\n"
                              + req("GET /ok?id=%31 HTTP/1.1\n"))],
    "exchange": [
        (0, req("PUT /u HTTP/1.1\nExpect: 100-continue\nContent-Length: 6\n")),
        (1, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (0, b"secret"),
        (1, req(f"HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Encoding: gzip\n"
                f"Content-Length: {len(gzip.compress(JSON_BODY))}\nSet-Cookie: uid=%E5%BC%A0\n",
                gzip.compress(JSON_BODY))),
        (0, req("HEAD /h HTTP/1.1\n") + req("GET /n HTTP/1.1\n") + req("GET /close HTTP/1.1\n")),
        (1, req("HTTP/1.1 200 OK\nContent-Length: 100\n") + req("HTTP/1.1 304 Not Modified\nContent-Length: 9\n")
         + req("HTTP/1.1 200 OK\nContent-Type: text/plain\n", b"until the end 13800138000")),
    ],
    # no escaped backslash: the JSON fast path (C-level replaces), values cut at every offset
    "json_fast": [(1, req(f"HTTP/1.1 200 OK\nContent-Type: application/vnd.api+json\n"
                          f"Content-Length: {len(JSON_FAST)}\n", JSON_FAST) + req("HTTP/1.1 204 No Content\n"))],
    "multipart_bare_lf": [(0, req(f"POST / HTTP/1.1\nContent-Type: multipart/form-data; boundary=zz\n"
                                  f"Content-Length: {len(MULTIPART_LF)}\n", MULTIPART_LF) + req("GET /z HTTP/1.1\n"))],
    "gap_in_body": [(0, req("POST /p HTTP/1.1\nContent-Length: 20\n", b"0123456789")),
                    ("gap", 0, 4), (0, b"EFGHIJ" + req("GET /q?a=%41 HTTP/1.1\n")),
                    ("gap", 0, 7), (0, b"junk\r\nGET /r HTTP/1.1\r\n\r\n")],
}
if brotli is not None:
    SCENARIOS["br_stacked"] = [(0, req(
        f"POST /b HTTP/1.1\nContent-Encoding: gzip, br\nContent-Type: application/json\n"
        f"Content-Length: {len(brotli.compress(gzip.compress(JSON_BODY)))}\n",
        brotli.compress(gzip.compress(JSON_BODY))))]


# -- requests ---------------------------------------------------------------------------------

def test_get_query_uri_and_headers() -> None:
    chunks, anomalies = run(SCENARIOS["get_query"])
    j = joined(chunks)
    assert j[(0, "http.uri", 0)] == nl("/s/张?name=张三&q=a b+c".encode())
    headers = j[(0, "http.header", 0)]
    assert headers == b"email=a@b.com\nhttp://r/?id=1 2\n10.1.2.3\n"
    assert b"c2VjcmV0" not in b"".join(c.data for c in chunks)     # Authorization is not ours
    assert not anomalies


def test_texts_end_as_soon_as_the_message_ends() -> None:
    """A value at the very end of a body must be complete for the scanner before the next message."""
    parser = HttpParser(Counter())
    out = parser.feed(0, post(b"id=110101199003077777", "Content-Type: application/x-www-form-urlencoded\n"))
    assert [(c.kind, c.data) for c in out] == [("http.uri", b"/\n"), ("http.body", b"id=110101199003077777"),
                                               ("http.body", b"\n")]
    out = parser.feed(0, post(b"a,b\n", "Content-Type: text/csv\n"))
    assert [(c.kind, c.data) for c in out] == [("http.uri", b"/\n"), ("http.body", b"a,b\n")]  # ended already


def test_credential_like_x_headers_skipped() -> None:
    got = content([(0, req("GET / HTTP/1.1\nX-Api-Key: k1\nX-Auth-Token: t1\nX-User-Email: a@b.com\n"))],
                  kind="http.header")
    assert got == [b"a@b.com\n"]


def test_form_percent_and_plus() -> None:
    assert content(SCENARIOS["form"]) == nls([FORM_DECODED])


def test_json_escapes_and_surrogates() -> None:
    body = req(f"POST /j HTTP/1.1\nContent-Type: application/problem+json\nContent-Length: {len(JSON_BODY)}\n",
               JSON_BODY)
    assert content([(0, body)]) == nls([JSON_DECODED])


def test_json_lone_surrogate_and_dangling_escape() -> None:
    body = b'["\\ud83d x","\\u12'
    got = content([(0, req(f"POST / HTTP/1.1\nContent-Type: application/json\nContent-Length: {len(body)}\n",
                           body))])
    assert got == nls(['["\ufffd x","\\u12'.encode()])


def test_chunked_value_split_with_extensions_and_trailers() -> None:
    chunks, anomalies = run(SCENARIOS["json_chunked"])
    assert joined(chunks)[(0, "http.body", 0)] == nl(JSON_DECODED)
    assert not anomalies
    # the chunk boundaries cut inside "\u5f20" and inside the id value
    assert len([c for c in chunks if c.kind == "http.body"]) >= 3


@pytest.mark.parametrize("name", ["raw_deflate", "zlib_deflate"])
def test_deflate_both_flavours(name: str) -> None:
    chunks, anomalies = run(SCENARIOS[name])
    assert joined(chunks)[(0, "http.body", 0)] == nl(CSV)
    assert not anomalies


def test_gzip_body() -> None:
    z = gzip.compress(CSV)
    assert content([(0, req(f"POST / HTTP/1.1\nContent-Encoding: gzip\nContent-Length: {len(z)}\n", z))]) == nls([CSV])


def test_gzip_multi_member() -> None:
    z = gzip.compress(CSV[:20]) + gzip.compress(CSV[20:])
    assert content([(0, req(f"POST / HTTP/1.1\nContent-Encoding: gzip\nContent-Length: {len(z)}\n", z))]) == nls([CSV])


def test_gzip_inside_chunked() -> None:
    assert content(SCENARIOS["gzip_in_chunked"]) == nls([JSON_DECODED])


@pytest.mark.skipif(brotli is None, reason="brotli not installed")
def test_br_and_stacked_encodings() -> None:
    z = brotli.compress(CSV)
    assert content([(0, req(f"POST / HTTP/1.1\nContent-Encoding: br\nContent-Length: {len(z)}\n", z))]) == nls([CSV])
    assert content(SCENARIOS["br_stacked"]) == nls([JSON_DECODED])


def test_br_unsupported_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_mod, "_brotli", None)
    chunks, anomalies = run([(0, req("POST / HTTP/1.1\nContent-Encoding: br\nContent-Length: 4\n", b"\x0b\x00\x80x")),
                             (0, req("GET /next HTTP/1.1\n"))])
    assert anomalies["app.http.br_unsupported"] == 1
    assert not [c for c in chunks if c.kind == "http.body"]
    assert joined(chunks)[(0, "http.uri", 1)] == nl(b"/next")


def test_decompress_error_counted_and_stream_continues() -> None:
    bad = b"\x1f\x8b\x08\x00garbage-not-deflate"
    chunks, anomalies = run([(0, req(f"POST / HTTP/1.1\nContent-Encoding: gzip\nContent-Length: {len(bad)}\n", bad)
                              + req("GET /after HTTP/1.1\n"))])
    assert anomalies["app.http.decompress_error"] == 1
    assert joined(chunks)[(0, "http.uri", 1)] == nl(b"/after")


def test_unknown_encoding_skipped() -> None:
    chunks, anomalies = run([(0, req("POST / HTTP/1.1\nContent-Encoding: zstd\nContent-Length: 3\n", b"abc"))])
    assert anomalies["app.http.encoding_unsupported"] == 1
    assert not [c for c in chunks if c.kind == "http.body"]


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """128 MiB of zeros, gzip level 9 (run-length strategy: same ratio, quicker), streamed: ~130 KB."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31, 9, zlib.Z_RLE)
    block = bytes(1 << 20)
    return b"".join(c.compress(block) for _ in range(128)) + c.flush()


def test_gzip_bomb_stopped_by_ratio(gzip_bomb: bytes) -> None:
    body = chunked(*[gzip_bomb[i:i + 8192] for i in range(0, len(gzip_bomb), 8192)])
    data = req("POST /bomb HTTP/1.1\nContent-Encoding: gzip\nTransfer-Encoding: chunked\n", body) \
        + req("GET /after HTTP/1.1\n")
    tracemalloc.start()
    t0 = time.perf_counter()
    anomalies: Counter[str] = Counter()
    parser = HttpParser(anomalies)
    chunks: list[Chunk] = []
    for i in range(0, len(data), 1448):
        chunks += parser.feed(0, data[i:i + 1448])
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert anomalies["limit.http_decompress_ratio"] == 1
    emitted = sum(len(c.data) for c in chunks if c.kind == "http.body")
    assert emitted <= (1 << 20) + (128 << 10)
    assert elapsed < 3.0
    assert peak < 8 << 20
    assert joined(chunks)[(0, "http.uri", 1)] == nl(b"/after")      # framing kept going


@pytest.mark.skipif(brotli is None, reason="brotli not installed")
def test_brotli_bomb_stopped() -> None:
    z = brotli.compress(bytes(256 << 20), quality=1)        # ~50 KB
    data = req(f"POST / HTTP/1.1\nContent-Encoding: br\nContent-Length: {len(z)}\n", z) + req("GET /n HTTP/1.1\n")
    anomalies: Counter[str] = Counter()
    parser = HttpParser(anomalies)
    chunks = [c for i in range(0, len(data), 1448) for c in parser.feed(0, data[i:i + 1448])]
    assert anomalies["limit.http_decompress_ratio"] == 1
    assert sum(len(c.data) for c in chunks if c.kind == "http.body") < 2 << 20
    assert joined(chunks)[(0, "http.uri", 1)] == nl(b"/n")


def test_decompressed_bytes_limit(gzip_bomb: bytes) -> None:
    limits = HttpLimits(decompressed_bytes=100_000, decompress_ratio=10 ** 9)
    z = gzip_bomb
    chunks, anomalies = run([(0, req(f"POST / HTTP/1.1\nContent-Encoding: gzip\nContent-Length: {len(z)}\n", z))],
                            limits=limits)
    assert anomalies["limit.http_decompressed"] == 1
    assert sum(len(c.data) for c in chunks if c.kind == "http.body") == 100_000 + len(b"\n")   # + end of text


def test_body_limit() -> None:
    body = b"x" * 5000
    chunks, anomalies = run([(0, req("POST / HTTP/1.1\nContent-Length: 5000\n", body) + req("GET /n HTTP/1.1\n"))],
                            limits=HttpLimits(body_bytes=1000))
    assert anomalies["limit.http_body"] == 1
    j = joined(chunks)
    assert j[(0, "http.body", 0)] == nl(b"x" * 1000)
    assert j[(0, "http.uri", 1)] == nl(b"/n")


# -- multipart -----------------------------------------------------------------------------------

def test_multipart_fields_csv_base64_nested() -> None:
    chunks, anomalies = run(SCENARIOS["multipart"])
    j = joined(chunks)
    bodies = [j[k] for k in sorted(j) if k[1] == "http.body"]
    assert bodies == nls([b"call me at 13800138000", CSV, "身份证 110101199003077777".encode(),
                          "{\"n\":\"李四\"}".encode(), b"inner text"])
    parts = sorted(k[2] for k in j if k[1] == "http.body")
    assert len(set(parts)) == 5 and 0 not in parts             # each part numbered apart from the message
    headers = [j[k] for k in sorted(j) if k[1] == "http.header"]
    assert headers == [b"people.csv\n", b"id.txt\n"]
    assert not anomalies


def test_multipart_quoted_printable_and_filename_star() -> None:
    mp = (b"--b\r\nContent-Disposition: attachment; filename*=UTF-8''%E5%BC%A0.txt\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\nname=3D=E5=BC=A0 soft=\r\nbreak\r\n--b--\r\n")
    chunks, _ = run([(0, req(f"POST / HTTP/1.1\nContent-Type: multipart/mixed; boundary=b\n"
                             f"Content-Length: {len(mp)}\n", mp))])
    j = joined(chunks)
    assert [j[k] for k in sorted(j) if k[1] == "http.body"] == nls(["name=张 softbreak".encode()])
    assert [j[k] for k in sorted(j) if k[1] == "http.header"] == ["张.txt\n".encode()]


def test_multipart_bare_lf_and_fast_json() -> None:
    j = joined(run(SCENARIOS["multipart_bare_lf"])[0])
    assert [j[k] for k in sorted(j) if k[1] == "http.body"] == nls([b"a,b\n1,2", b"plain"])
    assert content(SCENARIOS["json_fast"], direction=1) == nls(['{"n":"张三","e":"😀","q":""x"\n/"}\r\n'.encode()])


def test_transfer_coding_gzip_then_chunked() -> None:
    z = gzip.compress(CSV)
    got = content([(1, req("HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n", chunked(z[:7], z[7:])))],
                  direction=1)
    assert got == nls([CSV])


def test_multipart_depth_limit() -> None:
    def nest(level: int) -> bytes:
        if level == 0:
            return b"deep 13800138000"
        inner = nest(level - 1)
        ctype = f"multipart/mixed; boundary=b{level - 1}" if level > 1 else "text/plain"
        return (f"--b{level}\r\nContent-Type: {ctype}\r\n\r\n".encode() + inner + f"\r\n--b{level}--".encode())
    body = nest(4)
    chunks, anomalies = run([(0, req(f"POST / HTTP/1.1\nContent-Type: multipart/mixed; boundary=b4\n"
                                     f"Content-Length: {len(body)}\n", body))],
                            limits=HttpLimits(multipart_depth=2))
    assert anomalies["limit.multipart_depth"] == 1
    # beyond the depth the part is passed through as is: the value is still visible
    assert any(b"deep 13800138000" in c.data for c in chunks)


def test_multipart_parts_limit() -> None:
    body = b"".join(b"--b\r\n\r\nv%d\r\n" % i for i in range(10)) + b"--b--\r\n"
    chunks, anomalies = run([(0, req(f"POST / HTTP/1.1\nContent-Type: multipart/form-data; boundary=b\n"
                                     f"Content-Length: {len(body)}\n", body))],
                            limits=HttpLimits(multipart_parts=3))
    assert anomalies["limit.multipart_parts"] == 1
    j = joined(chunks)
    assert [j[k] for k in sorted(j) if k[1] == "http.body"] == [b"v0\n", b"v1\n", b"v2\n"]


# -- charsets ------------------------------------------------------------------------------------

def test_gbk_form_transcoded() -> None:
    assert content(SCENARIOS["gbk_form"]) == nls(["name=张三&city=北京".encode()])


def test_utf16le_bom_json_transcoded() -> None:
    assert content(SCENARIOS["utf16_json"]) == nls(['{"name":"张三","e":"😀"}'.encode()])


def test_utf16_declared_without_bom_and_gb2312_text() -> None:
    b1 = "张三 110101199003077777".encode("utf-16-be")
    b2 = "李四".encode("gbk")
    got = content([(0, post(b1, "Content-Type: text/plain; charset=UTF-16\n")
                    + post(b2, 'Content-Type: text/csv; charset="gb2312"\n'))])
    assert got == nls(["张三 110101199003077777".encode(), "李四".encode()])


def test_utf16le_without_bom_guessed() -> None:
    b1 = '{"id":"110101199003077777","name":"张三"}'.encode("utf-16-le")
    got = content([(0, req(f"POST / HTTP/1.1\nContent-Type: application/json; charset=utf-16\n"
                           f"Content-Length: {len(b1)}\n", b1))])
    assert got == nls(['{"id":"110101199003077777","name":"张三"}'.encode()])


def test_bom_without_charset() -> None:
    b1 = b"\xff\xfe" + "张三".encode("utf-16-le")
    b2 = b"\xef\xbb\xbf" + "李四".encode()
    got = content([(0, post(b1, "Content-Type: text/plain\n") + post(b2))])
    assert got == nls(["张三".encode(), "李四".encode()])


def test_other_charset_via_codec_and_unknown_passes_through() -> None:
    b1 = "Müller".encode("latin-1")
    got = content([(0, post(b1, "Content-Type: text/plain; charset=iso-8859-1\n")
                    + post(b"abc", "Content-Type: text/plain; charset=x-klingon\n"))])
    assert got == nls(["Müller".encode(), b"abc"])


# -- exchanges -------------------------------------------------------------------------------------

def test_pipelined_requests_get_their_own_parts() -> None:
    chunks, anomalies = run(SCENARIOS["pipelined"])
    j = joined(chunks)
    assert j[(0, "http.uri", 0)] == nl(b"/a?x=1")
    assert j[(0, "http.uri", 1)] == nl(b"/b")
    assert j[(0, "http.body", 1)] == nl(b"hello")
    assert j[(0, "http.uri", 2)] == nl(b"/c?y=A")
    assert not anomalies


def test_exchange_continue_head_304_and_read_until_close() -> None:
    anomalies: Counter[str] = Counter()
    parser = HttpParser(anomalies)
    chunks: list[Chunk] = []
    for d, data in SCENARIOS["exchange"]:  # type: ignore[misc]
        chunks += parser.feed(d, data)
    # the read-until-close body is emitted as it comes; close() ends it
    before = joined(chunks)
    chunks += parser.close()
    j = joined(chunks)
    assert j[(0, "http.body", 0)] == nl(b"secret")                  # body after 100 Continue
    assert j[(1, "http.header", 0)] == "uid=张\n".encode()
    assert j[(1, "http.body", 0)] == nl(JSON_DECODED)               # response decoded like a request
    assert (1, "http.body", 1) not in j                          # HEAD: Content-Length 100 but no body
    assert (1, "http.body", 2) not in j                          # 304
    assert j[(1, "http.body", 3)] == nl(b"until the end 13800138000")
    assert before[(1, "http.body", 3)] == b"until the end 13800138000"
    assert not anomalies


def test_204_has_no_body_and_next_response_parses() -> None:
    chunks, anomalies = run([(0, req("DELETE /x HTTP/1.1\n") + req("GET /y HTTP/1.1\n")),
                             (1, req("HTTP/1.1 204 No Content\n")
                              + req("HTTP/1.1 200 OK\nContent-Length: 2\n", b"ok"))])
    j = joined(chunks)
    assert j == {(0, "http.uri", 0): b"/x\n", (0, "http.uri", 1): b"/y\n", (1, "http.body", 1): b"ok\n"}
    assert not anomalies


def test_read_until_close_flushed_by_close() -> None:
    z = zlib.compress(b'{"who":"\\u5f20"}')
    anomalies: Counter[str] = Counter()
    parser = HttpParser(anomalies)
    parser.feed(0, req("GET / HTTP/1.1\n"))
    out = parser.feed(1, req("HTTP/1.0 200 OK\nContent-Type: application/json\nContent-Encoding: deflate\n", z))
    out += parser.close()
    assert joined(out)[(1, "http.body", 0)] == nl('{"who":"张"}'.encode())


def test_connect_is_opaque() -> None:
    chunks, anomalies = run([(0, req("CONNECT example.com:443 HTTP/1.1\nHost: example.com:443\n")),
                             (1, req("HTTP/1.1 200 Connection established\n")),
                             (0, b"\x16\x03\x01 secret 13800138000 GET / HTTP/1.1\r\n\r\n"),
                             (1, b"\x16\x03\x03 more")])
    assert anomalies["app.http.connect"] == 1
    assert [c.kind for c in chunks] == ["http.uri"]


def test_connect_refused_goes_on_as_http() -> None:
    chunks, _ = run([(0, req("CONNECT a:443 HTTP/1.1\n")),
                     (1, req("HTTP/1.1 407 Proxy Authentication Required\nContent-Length: 0\n")),
                     (0, req("GET /again HTTP/1.1\n"))])
    assert joined(chunks)[(0, "http.uri", 1)] == nl(b"/again")


def test_upgrade_101_is_opaque() -> None:
    chunks, anomalies = run([(0, req("GET /ws HTTP/1.1\nUpgrade: websocket\nConnection: Upgrade\n")),
                             (1, req("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n") + b"\x81\x05hello"),
                             (0, b"\x81\x85abcd\x00\x00\x00\x00\x00")])
    assert anomalies["app.http.upgrade"] == 1
    assert [c.kind for c in chunks] == ["http.uri"]


# -- garbage, resync, gaps, head limits ----------------------------------------------------------

def test_garbage_then_valid_request() -> None:
    chunks, anomalies = run(SCENARIOS["garbage_then_request"])
    j = joined(chunks)
    assert anomalies["app.http.parse_error"] == 1
    assert j[(0, "raw", 0)] == b"\x16\x03\x01garbage 123\r\nGETTING 4567 bytes\r\n\r\n"
    assert j[(0, "http.uri", 1)] == nl(b"/ok?id=1")


def test_response_garbage_and_bad_chunk_size_resync() -> None:
    chunks, anomalies = run([
        (0, req("GET /1 HTTP/1.1\n") + req("GET /2 HTTP/1.1\n")),
        (1, req("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", b"3\r\nabc\r\nzz\r\nmore junk\r\n")
         + req("HTTP/1.1 200 OK\nContent-Length: 4\n", b"good")),
    ])
    j = joined(chunks)
    assert anomalies["app.http.parse_error"] == 1
    assert j[(1, "http.body", 0)] == nl(b"abc")
    assert j[(1, "raw", 1)] == b"zz\r\nmore junk\r\n"
    assert j[(1, "http.body", 2)] == nl(b"good")


def test_oversized_head_falls_back_to_raw() -> None:
    big = req("GET /x HTTP/1.1\nX-Big: " + "a" * 3000 + "\n")
    chunks, anomalies = run([(0, big + req("GET /y HTTP/1.1\n"))], limits=HttpLimits(header_bytes=1024))
    j = joined(chunks)
    assert anomalies["app.http.parse_error"] == 1
    assert j[(0, "raw", 0)] == big
    assert j[(0, "http.uri", 1)] == nl(b"/y")


def test_binary_garbage_is_rejected_quickly_and_passed_raw() -> None:
    junk = bytes(range(256)) * 40        # no plausible start line anywhere
    chunks, anomalies = run([(0, junk)])
    assert anomalies["app.http.parse_error"] == 1
    assert b"".join(c.data for c in chunks) == junk
    assert {c.kind for c in chunks} == {"raw"}


def test_gap_mid_body_then_next_request() -> None:
    body = b"A" * 100
    full = req("POST /p HTTP/1.1\nContent-Length: 100\n", body)
    head_len = len(full) - 100
    chunks, anomalies = run([(0, full[:head_len + 30]), ("gap", 0, 40), (0, full[head_len + 70:]),
                             (0, req("GET /next?n=%31 HTTP/1.1\n"))])
    j = joined(chunks)
    assert anomalies["app.http.gap"] == 1 and not anomalies["app.http.parse_error"]
    assert j[(0, "http.body", 0)] == nl(b"A" * 30)
    assert j[(0, "raw", 1)] == nl(b"A" * 30)                          # after the hole: raw, a new part
    assert j[(0, "http.uri", 2)] == nl(b"/next?n=1")


def test_gap_scenario_parts() -> None:
    chunks, anomalies = run(SCENARIOS["gap_in_body"])
    j = joined(chunks)
    assert anomalies == Counter({"app.http.gap": 2})
    assert j[(0, "http.body", 0)] == nl(b"0123456789")
    assert j[(0, "raw", 1)] == nl(b"EFGHIJ")
    assert j[(0, "http.uri", 2)] == nl(b"/q?a=A")
    assert j[(0, "raw", 3)] == b"junk\r\n"                    # after a hole between messages: resync
    assert j[(0, "http.uri", 4)] == nl(b"/r")


def test_gap_in_chunked_framing_resyncs() -> None:
    chunks, anomalies = run([(0, req("POST /p HTTP/1.1\nTransfer-Encoding: chunked\n", b"5\r\nhello\r\n")),
                             ("gap", 0, 17), (0, b"lo\r\n0\r\n\r\n" + req("GET /next HTTP/1.1\n"))])
    j = joined(chunks)
    assert anomalies["app.http.gap"] == 1 and not anomalies["app.http.parse_error"]
    assert j[(0, "http.body", 0)] == nl(b"hello")
    assert j[(0, "raw", 1)] == b"lo\r\n0\r\n\r\n"
    assert j[(0, "http.uri", 2)] == nl(b"/next")


def test_gap_in_compressed_body_drops_rest() -> None:
    z = gzip.compress(CSV * 20)
    full = req(f"POST / HTTP/1.1\nContent-Encoding: gzip\nContent-Length: {len(z)}\n", z)
    cut = len(full) - len(z) + 40
    chunks, anomalies = run([(0, full[:cut]), ("gap", 0, 10), (0, full[cut + 10:] + req("GET /n HTTP/1.1\n"))])
    j = joined(chunks)
    assert not [k for k in j if k[1] == "raw"]
    assert j[(0, "http.uri", 1)] == nl(b"/n")
    assert not anomalies["app.http.decompress_error"]


# -- split points ----------------------------------------------------------------------------------

def _splits(items: list[Item]):
    """Every conversation obtained by cutting one feed in two, at every offset."""
    for i, item in enumerate(items):
        if item[0] == "gap":
            continue
        d, data = item  # type: ignore[misc]
        for k in range(1, len(data)):
            yield items[:i] + [(d, data[:k]), (d, data[k:])] + items[i + 1:]


def _bytewise(items: list[Item]) -> list[Item]:
    out: list[Item] = []
    for item in items:
        if item[0] == "gap":
            out.append(item)
        else:
            out += [(item[0], item[1][k:k + 1]) for k in range(len(item[1]))]  # type: ignore[index]
    return out


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_split_points(name: str) -> None:
    items = SCENARIOS[name]
    ref_chunks, ref_anomalies = run(items)
    ref = joined(ref_chunks)
    assert ref
    got_chunks, got_anomalies = run(_bytewise(items))
    assert joined(got_chunks) == ref, "byte by byte"
    assert got_anomalies == ref_anomalies
    for variant in _splits(items):
        chunks, anomalies = run(variant)
        if joined(chunks) != ref or anomalies != ref_anomalies:
            cut = next(i for i, (a, b) in enumerate(zip(variant, items)) if a != b)
            pytest.fail(f"split in feed {cut} at {len(variant[cut][1])}: {joined(chunks)} != {ref}")


@pytest.mark.parametrize("value, expected", [
    (b"example.com", "example.com"),
    (b" Files.Example.COM.:443 ", "files.example.com"),
    (b"203.0.113.7:8080", None),                 # an address literal: the flow's address says more
    (b"[2001:db8::1]:443", None),
    (b"fe80::1", None),
    (b"a.example, b.example", None),            # two Host fields, joined
    (b"a.example b.example", None),
    (b"", None),
    (b"x" * 300, None),
    (b"caf\xc3\xa9.example", "café.example"),
    (b"bad\xff.example", "bad\\xff.example"),
])
def test_host_header_names(value, expected):
    from agent.apps.http import _host_name
    assert _host_name(value) == expected


def test_parser_keeps_the_first_host_of_the_connection():   # direction 0: to the server
    parser = HttpParser(Counter())
    parser.feed(0, b"GET / HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\nHost: one.example\r\n\r\n"
                          b"GET /b HTTP/1.1\r\nHost: two.example\r\n\r\n")
    assert parser.host == "one.example"

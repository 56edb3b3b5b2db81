"""TLS ClientHello SNI extraction (agent.apps.tls).

Hellos are built byte by byte here (and one with scapy, as an independent encoder), then fed
whole, as every prefix (one TCP segment at a time), split into many TLS records, mutated and
truncated at every offset. The corpus test compares with tshark on real captures: ECH,
post-quantum key shares over many segments, GREASE, MTU-300 fragmentation, HRR, SSLv2.
"""

from __future__ import annotations

import random
import struct

import pytest

from agent.apps.tls import _MAX_RECORDS, MAX_CLIENT_HELLO, client_hello_sni
from tests.agent.test_apps_detect import corpus_packets, corpus_rows, prefetch, tcp_streams

GREASE = 0x3A3A


def ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(struct.pack("!BH", name_type, len(name)) + name for name in names)
    return ext(0, struct.pack("!H", len(entries)) + entries)


def client_hello(extensions: list[bytes] | None, *, session_id: bytes = bytes(range(32)),
                 ciphers: tuple[int, ...] = (0x1301, 0x1302, 0x1303, 0xC02F)) -> bytes:
    """A ClientHello handshake message (4-byte header included); None = no extensions block."""
    suites = b"".join(struct.pack("!H", c) for c in ciphers)
    body = b"\x03\x03" + bytes(range(100, 132)) + bytes([len(session_id)]) + session_id \
        + struct.pack("!H", len(suites)) + suites + b"\x01\x00"
    if extensions is not None:
        block = b"".join(extensions)
        body += struct.pack("!H", len(block)) + block
    return struct.pack("!I", 0x01000000 | len(body)) + body


def records(message: bytes, sizes: int | list[int] = 1 << 14, *, version: int = 0x0301) -> bytes:
    """The message as handshake records: fragments of `sizes` bytes (a list is used in turn, the last repeating)."""
    out, pos, i = bytearray(), 0, 0
    while pos < len(message):
        size = sizes if isinstance(sizes, int) else sizes[min(i, len(sizes) - 1)]
        fragment = message[pos:pos + size]
        out += struct.pack("!BHH", 0x16, version, len(fragment)) + fragment
        pos += size
        i += 1
    return bytes(out)


def typical_extensions(name: bytes = b"www.example.com") -> list[bytes]:
    return [
        ext(GREASE, b""),
        sni_ext(name),
        ext(23, b""),                                                    # extended_master_secret
        ext(10, struct.pack("!HHHH", 6, 0x2A2A, 0x001D, 0x0017)),        # supported_groups with GREASE
        ext(16, b"\x00\x0c\x02h2\x08http/1.1"),                          # ALPN
        ext(43, b"\x06\x2a\x2a\x03\x04\x03\x03"),                        # supported_versions with GREASE
        ext(51, struct.pack("!HHH", 38, 0x001D, 32) + bytes(32)),        # key_share x25519
        ext(0x1A1A, b"\x00"),                                            # GREASE with data
    ]


HELLO = records(client_hello(typical_extensions()))


def assert_prefixes_until_complete(stream: bytes, expected: str | bool, complete_at: int) -> None:
    for n in range(complete_at):
        assert client_hello_sni(stream[:n]) is None, n
    for n in range(complete_at, len(stream) + 1):
        assert client_hello_sni(stream[:n]) == expected, n


# -- well-formed hellos ---------------------------------------------------------------------

def test_sni() -> None:
    assert client_hello_sni(HELLO) == "www.example.com"


def test_sni_lower_case_and_trailing_dot() -> None:
    assert client_hello_sni(records(client_hello([sni_ext(b"WWW.Example.COM.")]))) == "www.example.com"


def test_sni_is_the_only_extension() -> None:
    assert client_hello_sni(records(client_hello([sni_ext(b"a.b")]))) == "a.b"


def test_every_prefix_needs_more_until_complete() -> None:
    assert_prefixes_until_complete(HELLO, "www.example.com", len(HELLO))


def test_trailing_bytes_after_hello() -> None:
    # Change cipher spec and early data may follow in the same segment.
    assert client_hello_sni(HELLO + bytes.fromhex("140303000101") + b"\x17\x03\x03\x00\x05hello") == "www.example.com"


@pytest.mark.parametrize("record_version", [0x0300, 0x0301, 0x0303])
def test_record_versions(record_version: int) -> None:
    assert client_hello_sni(records(client_hello([sni_ext(b"v.example")]), version=record_version)) == "v.example"


def test_record_fragmentation_at_every_split_point() -> None:
    message = client_hello(typical_extensions(b"split.example"))
    for k in range(1, len(message)):
        stream = records(message, [k, len(message)])
        assert client_hello_sni(stream) == "split.example", k


def test_one_byte_records() -> None:
    # The handshake header itself is spread over four records.
    message = client_hello([sni_ext(b"tiny.example")])
    stream = records(message, 1)
    assert client_hello_sni(stream) == "tiny.example"
    assert_prefixes_until_complete(stream, "tiny.example", len(stream))


def test_record_fragmentation_and_segment_split() -> None:
    message = client_hello(typical_extensions(b"both.example"))
    stream = records(message, [7, 50, 3, 100, 1000])
    assert_prefixes_until_complete(stream, "both.example", len(stream))


def test_empty_handshake_records_are_skipped() -> None:
    message = client_hello([sni_ext(b"empty.example")])
    stream = records(message[:10]) + bytes.fromhex("1603010000") + records(message[10:])
    assert client_hello_sni(stream) == "empty.example"


def test_grease_everywhere() -> None:
    extensions = [ext(g, bytes(g & 7)) for g in (0x0A0A, 0x1A1A, 0x2A2A)] + [sni_ext(b"grease.example"),
                                                                              ext(0xFAFA, b"")]
    hello = client_hello(extensions, ciphers=(0x4A4A, 0x1301, 0xCACA))
    assert client_hello_sni(records(hello)) == "grease.example"


def test_ech_returns_outer_name() -> None:
    ech = ext(0xFE0D, b"\x00" + struct.pack("!HH", 1, 1) + b"\x2a" + struct.pack("!H", 32) + bytes(32)
              + struct.pack("!H", 200) + random.Random(1).randbytes(200))
    hello = client_hello([sni_ext(b"public.example"), ech, ext(51, bytes(40))])
    assert client_hello_sni(records(hello)) == "public.example"


def test_post_quantum_hello_over_many_segments() -> None:
    # X25519Kyber768 key share (1216 bytes) plus padding to beyond one record: two records,
    # carried in 1460-byte segments; the name comes after the big extensions.
    key_share = ext(51, struct.pack("!HHH", 4 + 1216 + 4 + 32 - 2, 0x6399, 1216) + bytes(1216)
                    + struct.pack("!HH", 0x001D, 32) + bytes(32))
    hello = client_hello([key_share, ext(21, bytes(17000)), sni_ext(b"pq.example")])
    assert len(hello) > 1 << 14
    stream = records(hello)
    assert stream.count(b"\x16\x03\x01") >= 2
    segments = [stream[i:i + 1460] for i in range(0, len(stream), 1460)]
    buffered = b""
    for i, segment in enumerate(segments):
        buffered += segment
        assert client_hello_sni(buffered) == ("pq.example" if i == len(segments) - 1 else None)


def test_hello_retry_request_first_hello_is_enough() -> None:
    first = records(client_hello([sni_ext(b"hrr.example"), ext(51, bytes(2))]))
    second = records(client_hello([sni_ext(b"hrr.example"), ext(51, bytes(40))]), version=0x0303)
    assert client_hello_sni(first + bytes.fromhex("140303000101") + second) == "hrr.example"


def test_several_names_first_host_name_wins() -> None:
    entries = struct.pack("!BH", 7, 3) + b"odd" + struct.pack("!BH", 0, 9) + b"first.one" \
        + struct.pack("!BH", 0, 10) + b"second.one"
    hello = client_hello([ext(0, struct.pack("!H", len(entries)) + entries)])
    assert client_hello_sni(records(hello)) == "first.one"


def test_non_ascii_names_are_kept_readable() -> None:
    assert client_hello_sni(records(client_hello([sni_ext("bücher.example".encode())]))) == "bücher.example"
    assert client_hello_sni(records(client_hello([sni_ext(b"xn--bcher-kva.example")]))) == "xn--bcher-kva.example"
    assert client_hello_sni(records(client_hello([sni_ext(b"bad\xff.example")]))) == "bad\\xff.example"


def test_input_types_and_caller_buffer_stays_resizable() -> None:
    buffer = bytearray(HELLO[:100])
    assert client_hello_sni(buffer) is None
    buffer += HELLO[100:]                        # no view of the buffer may outlive the call
    assert client_hello_sni(buffer) == "www.example.com"
    buffer += b"more"
    assert client_hello_sni(memoryview(HELLO)) == "www.example.com"
    assert client_hello_sni(memoryview(b"xx" + HELLO)[2:]) == "www.example.com"


def test_scapy_built_hello() -> None:
    scapy_all = pytest.importorskip("scapy.all")
    scapy_all.load_layer("tls")
    from scapy.layers.tls.extensions import TLS_Ext_ServerName, TLS_Ext_SupportedGroups, ServerName
    from scapy.layers.tls.handshake import TLSClientHello
    from scapy.layers.tls.record import TLS

    hello = TLSClientHello(ciphers=[0x1301, 0xC02F], ext=[
        TLS_Ext_SupportedGroups(groups=[0x001D]),
        TLS_Ext_ServerName(servernames=[ServerName(servername=b"scapy.example")])])
    stream = bytes(TLS(msg=[hello]))
    assert client_hello_sni(stream) == "scapy.example"
    # And our own encoder agrees with scapy's decoder.
    parsed = TLS(HELLO)
    names = [sn.servername for e in parsed.msg[0].ext if isinstance(e, TLS_Ext_ServerName) for sn in e.servernames]
    assert names == [b"www.example.com"]


# -- no SNI / not a ClientHello ---------------------------------------------------------------

def test_no_sni_extension() -> None:
    stream = records(client_hello([ext(10, b"\x00\x02\x00\x1d"), ext(43, b"\x02\x03\x04")]))
    assert_prefixes_until_complete(stream, False, len(stream))


def test_no_extensions_block() -> None:
    assert client_hello_sni(records(client_hello(None))) is False


def test_empty_extensions_block() -> None:
    assert client_hello_sni(records(client_hello([]))) is False


@pytest.mark.parametrize("server_name", [
    ext(0, b""),                                              # no list
    ext(0, b"\x00\x00"),                                      # empty list
    sni_ext(b"only-other-type", name_type=7),                 # no host_name entry
    sni_ext(b""),                                             # empty name
    sni_ext(b"."),                                            # nothing left of it
    ext(0, b"\x00\x10\x00\x00\x05short"),                     # list runs past the extension
    ext(0, b"\x00\x04\x00\x00\x05short"),                     # entry runs past the list
])
def test_unusable_server_name(server_name: bytes) -> None:
    assert client_hello_sni(records(client_hello([server_name]))) is False


def test_sslv2_hello() -> None:
    sslv2 = bytes.fromhex("802e0100020015000000100700c00500800300800100800600400400800200801c30e2b12f4c04525476f2")
    assert client_hello_sni(sslv2) is False
    assert client_hello_sni(sslv2[:1]) is False


@pytest.mark.parametrize("stream", [
    bytes.fromhex("1703030010") + bytes(16),                  # application data
    bytes.fromhex("15030300020228"),                          # alert
    bytes.fromhex("1603030058020000540303") + bytes(80),      # ServerHello
    bytes.fromhex("1602010010"),                              # record version 2.1
    bytes.fromhex("1603050010"),                              # record version 3.5
    bytes.fromhex("16030149ff"),                              # record too long
    b"GET / HTTP/1.1\r\n",
    b"\x16\x04",
])
def test_not_a_client_hello(stream: bytes) -> None:
    assert client_hello_sni(stream) is False


def test_other_record_before_hello_complete() -> None:
    message = client_hello([sni_ext(b"x.example")])
    stream = records(message[:20]) + bytes.fromhex("15030100020228") + records(message[20:])
    assert client_hello_sni(stream) is False


def test_too_large_declared_length() -> None:
    header = struct.pack("!I", 0x01000000 | MAX_CLIENT_HELLO)
    assert client_hello_sni(records(header + bytes(100))) is False


def test_too_many_records() -> None:
    message = client_hello([ext(21, bytes(400)), sni_ext(b"late.example")])
    assert client_hello_sni(records(message, 1)) is False        # ~470 one-byte records


def test_extension_past_end_of_block() -> None:
    hello = bytearray(client_hello([ext(10, b"\x00\x02\x00\x1d"), sni_ext(b"x.example")]))
    hello[-len(sni_ext(b"x.example")) + 3] = 0xFF                 # server_name length far too big
    assert client_hello_sni(records(bytes(hello))) is False


# -- hostile input ----------------------------------------------------------------------------

def test_truncation_and_mutation_fuzz() -> None:
    rng = random.Random(1234)
    stream = records(client_hello(typical_extensions(b"fuzz.example")), [20, 9, 300])
    for n in range(len(stream) + 1):
        assert client_hello_sni(stream[:n]) in (None, "fuzz.example")
    for i in range(len(stream)):
        for value in (0x00, 0xFF, stream[i] ^ 0x01, stream[i] ^ 0x80, rng.randrange(256)):
            mutated = bytearray(stream)
            mutated[i] = value
            result = client_hello_sni(bytes(mutated))
            assert result is None or result is False or isinstance(result, str)
        deleted = client_hello_sni(stream[:i] + stream[i + 1:])
        assert deleted is None or deleted is False or isinstance(deleted, str)


def test_random_bytes() -> None:
    rng = random.Random(42)
    prefixes = (b"", b"\x16", b"\x16\x03\x01", b"\x16\x03\x01\x02\x00\x01", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc")
    for _ in range(20000):
        data = rng.choice(prefixes) + rng.randbytes(rng.choice((0, 1, 5, 40, 300, 2000)))
        result = client_hello_sni(data)
        assert result is None or result is False or isinstance(result, str)


def test_hostile_record_storm_is_cheap() -> None:
    # 1-byte records fed a few bytes at a time: no call walks more than _MAX_RECORDS headers.
    stream = records(client_hello([ext(21, bytes(3000)), sni_ext(b"x.example")]), 1)
    for n in range(0, 6 * _MAX_RECORDS, 7):
        assert client_hello_sni(stream[:n]) is None
    assert client_hello_sni(stream[:6 * (_MAX_RECORDS + 1)]) is False
    assert client_hello_sni(stream) is False


# -- third-party corpus vs tshark ------------------------------------------------------------

def test_corpus_client_hellos_match_tshark() -> None:
    """For each capture under tls/: the client's bytes of the first stream with a ClientHello
    (with a server name when tshark saw one) give tshark's first non-empty server name, or
    False when it saw none; every prefix before that point gives None."""
    rows = corpus_rows(("tls/",))
    prefetch([row["path_in_corpus"] for row in rows])
    seen = []
    for row in rows:
        streams = [s for _, s in sorted(tcp_streams(corpus_packets(row["path_in_corpus"])).items()) if s.client_hello]
        assert streams, row["path_in_corpus"]
        stream = next((s for s in streams if s.sni), streams[0])
        data = stream.data(0)
        expected = stream.sni.lower() if stream.sni else False
        assert client_hello_sni(data) == expected, row["path_in_corpus"]
        # Segment by segment as the capture delivered it, then every prefix.
        buffered = b""
        answers = []
        for direction, chunk in stream.chunks:
            if direction == 0:
                buffered += chunk
                answers.append(client_hello_sni(buffered))
        decided = next(i for i, a in enumerate(answers) if a is not None)
        assert answers[decided:] == [expected] * (len(answers) - decided), row["path_in_corpus"]
        complete = next(n for n in range(len(data) + 1) if client_hello_sni(data[:n]) is not None)
        assert all(client_hello_sni(data[:n]) == expected for n in range(complete, min(len(data), complete + 64) + 1))
        seen.append((row["path_in_corpus"], expected, decided + 1))
    assert len(seen) >= 10
    assert any(expected is False for _, expected, _ in seen)       # the SSLv2 hello
    assert any(segments > 1 for _, _, segments in seen)            # a hello over several segments

"""Passive DNS map: answers of real captures against tshark, CNAME chains, bounds, TTLs, hostile input."""

from __future__ import annotations

import csv
import ipaddress
import json
import random
import shutil
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.reassembly import TOCLIENT, TOSERVER
from geo.passive_dns import PassiveDns
from tests.streams import CORPUS, CORPUS_MISSING, reassemble

S = 1_000_000          # µs per second
T0 = 1_700_000_000 * S


# -- building messages by hand (RFC 1035 4.1) -------------------------------------------------

def wire_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def response(question: str, answers: list[bytes], *, flags: int = 0x8180, ancount: int | None = None) -> bytes:
    header = struct.pack("!HHHHHH", 0x1234, flags, 1, len(answers) if ancount is None else ancount, 0, 0)
    return header + wire_name(question) + struct.pack("!HH", 1, 1) + b"".join(answers)


CHAIN = response("www.example.com", [
    rr(b"\xc0\x0c", 5, 300, wire_name("www.example.com.cdn.example.net")),
    rr(wire_name("www.example.com.cdn.example.net"), 5, 60, wire_name("e7.edge.example.org")),
    rr(wire_name("e7.edge.example.org"), 1, 20, a("192.0.2.7")),
    rr(wire_name("e7.edge.example.org"), 28, 20, a("2001:db8::7")),
])


def test_cname_chain_maps_address_to_queried_name_and_every_target():
    pdns = PassiveDns()
    assert pdns.observe(CHAIN, T0) == len(CHAIN)
    chain = ("www.example.com", "www.example.com.cdn.example.net", "e7.edge.example.org")
    assert pdns.names(a("192.0.2.7"), T0) == chain
    assert pdns.names(a("2001:db8::7"), T0 + 1) == chain
    assert pdns.names(a("192.0.2.8"), T0) == ()
    assert not pdns.anomalies


def test_names_are_lower_cased_and_most_recent_first():
    pdns = PassiveDns()
    pdns.observe(response("API.Example.COM", [rr(b"\xc0\x0c", 1, 600, a("198.51.100.1"))]), T0)
    pdns.observe(response("mail.example.com", [rr(b"\xc0\x0c", 1, 600, a("198.51.100.1"))]), T0 + S)
    assert pdns.names(a("198.51.100.1"), T0 + 2 * S) == ("mail.example.com", "api.example.com")
    pdns.observe(response("api.example.com", [rr(b"\xc0\x0c", 1, 600, a("198.51.100.1"))]), T0 + 3 * S)
    assert pdns.names(a("198.51.100.1"), T0 + 4 * S) == ("api.example.com", "mail.example.com")


def test_ttl_is_respected_loosely_with_floor_and_cap():
    pdns = PassiveDns(ttl_floor_s=300, ttl_cap_s=3600)
    short = response("short.example", [rr(b"\xc0\x0c", 1, 5, a("192.0.2.1"))])
    long = response("long.example", [rr(b"\xc0\x0c", 1, 7 * 86_400, a("192.0.2.2"))])
    mid = response("mid.example", [rr(b"\xc0\x0c", 1, 1000, a("192.0.2.3"))])
    for msg in (short, long, mid):
        pdns.observe(msg, T0)
    # A 5 s TTL lives for the 300 s floor, a week-long one for the 3600 s cap, 1000 s as given.
    assert pdns.names(a("192.0.2.1"), T0 + 299 * S) == ("short.example",)
    assert pdns.names(a("192.0.2.1"), T0 + 300 * S) == ()
    assert pdns.names(a("192.0.2.3"), T0 + 999 * S) == ("mid.example",)
    assert pdns.names(a("192.0.2.3"), T0 + 1000 * S) == ()
    assert pdns.names(a("192.0.2.2"), T0 + 3599 * S) == ("long.example",)
    assert pdns.names(a("192.0.2.2"), T0 + 3600 * S) == ()
    assert len(pdns) == 0            # expired addresses leave the map when asked for


def test_bounded_in_addresses_and_names_per_address():
    pdns = PassiveDns(max_addresses=3, max_names=2)
    for i in range(5):
        pdns.observe(response(f"host{i}.example", [rr(b"\xc0\x0c", 1, 600, a(f"192.0.2.{i}"))]), T0 + i)
    assert len(pdns) == 3
    assert pdns.names(a("192.0.2.0"), T0 + 9) == () and pdns.names(a("192.0.2.1"), T0 + 9) == ()
    assert pdns.names(a("192.0.2.4"), T0 + 9) == ("host4.example",)
    # A chain longer than the per-address bound keeps the names nearest the question.
    pdns.observe(CHAIN, T0 + 10)
    assert pdns.names(a("192.0.2.7"), T0 + 11) == ("www.example.com", "www.example.com.cdn.example.net")


def test_tcp_framing_consumes_complete_messages_only():
    first = response("one.example", [rr(b"\xc0\x0c", 1, 60, a("192.0.2.11"))])
    second = response("two.example", [rr(b"\xc0\x0c", 1, 60, a("192.0.2.12"))])
    stream = struct.pack("!H", len(first)) + first + struct.pack("!H", len(second)) + second
    pdns = PassiveDns()
    cut = len(first) + 2 + 7
    assert pdns.observe(stream[:cut], T0, tcp=True) == len(first) + 2      # the rest waits for more bytes
    assert pdns.names(a("192.0.2.11"), T0) == ("one.example",) and pdns.names(a("192.0.2.12"), T0) == ()
    assert pdns.observe(memoryview(stream)[len(first) + 2:], T0, tcp=True) == len(second) + 2
    assert pdns.names(a("192.0.2.12"), T0) == ("two.example",)
    assert not pdns.anomalies


def test_queries_error_responses_and_other_classes_add_nothing():
    pdns = PassiveDns()
    answer = [rr(b"\xc0\x0c", 1, 60, a("192.0.2.20"))]
    pdns.observe(response("q.example", answer, flags=0x0100), T0)               # a query
    pdns.observe(response("q.example", answer, flags=0x8183), T0)               # NXDOMAIN
    pdns.observe(response("q.example", answer, flags=0x8980), T0)               # opcode 1
    pdns.observe(response("q.example", [rr(b"\xc0\x0c", 1, 60, a("192.0.2.20"), rclass=3)]), T0)   # CHAOS
    assert len(pdns) == 0 and not pdns.anomalies
    pdns.observe(response("m.local", [rr(b"\xc0\x0c", 1, 120, a("192.0.2.21"), rclass=0x8001)]), T0)  # mDNS flush bit
    assert pdns.names(a("192.0.2.21"), T0) == ("m.local",)


# -- hostile input ----------------------------------------------------------------------------

HEADER_1Q1A = struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0)
QUESTION = wire_name("x.example") + struct.pack("!HH", 1, 1)        # at offset 12, 15 bytes

HOSTILE = {
    "pointer to itself": HEADER_1Q1A + QUESTION + rr(b"\xc0\x1b", 1, 60, a("192.0.2.30")),
    "forward pointer": HEADER_1Q1A + QUESTION + rr(b"\xc0\x30", 1, 60, a("192.0.2.30")) + b"\0" * 8,
    "two pointers in a loop": struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0) + b"\x01a\xc0\x10\x01b\xc0\x0c"
                              + struct.pack("!HH", 1, 1) + rr(b"\xc0\x0c", 1, 60, a("192.0.2.30")),
    "pointer past the end": HEADER_1Q1A + QUESTION + rr(b"\xc0\xff", 1, 60, a("192.0.2.30")),
    "label longer than 63": HEADER_1Q1A + QUESTION + rr(b"\x50" + b"a" * 80 + b"\0", 1, 60, a("192.0.2.30")),
    "name longer than 255": HEADER_1Q1A + QUESTION + rr(b"\x3fabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk" * 5 + b"\0", 1, 60, a("192.0.2.30")),
    "A with 5 bytes": HEADER_1Q1A + QUESTION + rr(b"\xc0\x0c", 1, 60, a("192.0.2.30") + b"\0"),
    "AAAA with 4 bytes": HEADER_1Q1A + QUESTION + rr(b"\xc0\x0c", 28, 60, a("192.0.2.30")),
    "rdlength past the end": HEADER_1Q1A + QUESTION + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 400) + b"\0" * 4,
    "huge answer count": struct.pack("!HHHHHH", 1, 0x8180, 1, 65535, 0, 0) + QUESTION
                         + rr(b"\xc0\x0c", 1, 60, a("192.0.2.30")),
    "huge question count": struct.pack("!HHHHHH", 1, 0x8180, 65535, 0, 0, 0) + QUESTION * 3,
    "CNAME target runs past rdata": HEADER_1Q1A + QUESTION + rr(b"\xc0\x0c", 5, 60, b"\x05abc"),
    "short header": b"\x12\x34\x81\x80\x00",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_malformed_responses_are_counted_never_raised(case: str):
    anomalies: Counter[str] = Counter()
    pdns = PassiveDns(anomalies=anomalies)
    pdns.observe(HOSTILE[case], T0)
    assert anomalies == Counter({"dns.malformed": 1})
    assert len(pdns) == 0


def test_cname_loop_is_counted_and_the_walk_ends():
    loop = response("a.example", [
        rr(b"\xc0\x0c", 5, 60, wire_name("b.example")),
        rr(wire_name("b.example"), 5, 60, wire_name("a.example")),
        rr(wire_name("a.example"), 1, 60, a("192.0.2.40")),
    ])
    anomalies: Counter[str] = Counter()
    pdns = PassiveDns(anomalies=anomalies)
    pdns.observe(loop, T0)
    assert anomalies["dns.cname_loop"] == 1
    assert set(pdns.names(a("192.0.2.40"), T0)) == {"a.example", "b.example"}


def test_every_truncation_of_a_real_shaped_response_is_safe():
    """The answer section ends the message, so every shorter prefix cuts into what is read."""
    for cut in range(len(CHAIN)):
        anomalies: Counter[str] = Counter()
        pdns = PassiveDns(anomalies=anomalies)
        pdns.observe(CHAIN[:cut], T0)
        assert anomalies["dns.malformed"] == 1, cut        # every cut lands inside what is read
        assert len(pdns) == 0


def test_random_mutations_of_corpus_responses_never_raise():
    responses = _corpus_udp_responses()[:200]
    rng = random.Random(20240322)
    anomalies: Counter[str] = Counter()
    pdns = PassiveDns(max_addresses=1024, anomalies=anomalies)
    deadline = time.monotonic() + 60               # bound in time as well as in count
    mutated = 0
    for round_ in range(20):
        for msg in responses:
            data = bytearray(msg)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            pdns.observe(bytes(data), T0 + round_)
            mutated += 1
        if time.monotonic() > deadline:
            break
    assert mutated >= len(responses)
    assert anomalies["dns.malformed"] > 0              # some mutations do break the format
    assert set(anomalies) <= {"dns.malformed", "dns.cname_loop"}


# -- real captures against tshark -------------------------------------------------------------

def _dns_captures() -> list[Path]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.is_file():
        pytest.skip(CORPUS_MISSING)
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [CORPUS / row["path_in_corpus"] for row in rows
            if "DNS" in row["what_it_exercises"] and not row["path_in_corpus"].endswith(".mmdb")]


def _corpus_udp_responses() -> list[bytes]:
    found = []
    for path in _dns_captures():
        flows, _ = reassemble(path)
        for collected in flows:
            if collected.flow.proto == 17:
                found += [p for d in (TOSERVER, TOCLIENT) for p in collected.parts[d] if len(p) > 12 and p[2] & 0x80]
    if not found:
        pytest.skip(CORPUS_MISSING)
    return found


def _observe_capture(path: Path) -> tuple[PassiveDns, Counter[str]]:
    """Every UDP datagram and every TCP stream (length-framed) of the capture, both directions."""
    anomalies: Counter[str] = Counter()
    pdns = PassiveDns(max_addresses=100_000, max_names=64, anomalies=anomalies, ttl_floor_s=10**9, ttl_cap_s=10**9)
    flows, _ = reassemble(path)
    for collected in flows:
        for direction in (TOSERVER, TOCLIENT):
            if collected.flow.proto == 17:
                for datagram in collected.parts[direction]:
                    pdns.observe(datagram, 0)
            elif 53 in (collected.flow.sport, collected.flow.cport):
                stream = collected.stream(direction, gap_markers=False)
                assert pdns.observe(stream, 0, tcp=True) == len(stream)
    return pdns, anomalies


def _tshark_expected(path: Path) -> dict[bytes, set[str]]:
    """address -> every answer owner name for it plus the CNAME owners leading there, per message."""
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "dns.flags.response == 1",
                          "-T", "json", "-J", "dns mdns"], capture_output=True, text=True, timeout=120, check=True)
    expected: dict[bytes, set[str]] = {}
    for packet in json.loads(out.stdout or "[]"):
        layers = packet["_source"]["layers"]
        for key in ("dns", "mdns"):
            messages = layers.get(key, [])
            for message in messages if isinstance(messages, list) else [messages]:
                flags = message.get("dns.flags_tree", {})
                if flags.get("dns.flags.rcode", "0") != "0" or flags.get("dns.flags.opcode", "0") != "0":
                    continue
                records = [r for r in message.get("Answers", {}).values() if int(r["dns.resp.class"], 16) & 0x7FFF == 1]
                owners: dict[str, set[str]] = {}
                for r in records:
                    if r["dns.resp.type"] == "5":
                        owners.setdefault(r["dns.cname"].lower(), set()).add(r["dns.resp.name"].lower())
                for r in records:
                    if r["dns.resp.type"] in ("1", "28"):
                        names = {r["dns.resp.name"].lower()}
                        frontier = set(names)
                        while frontier:
                            frontier = {o for n in frontier for o in owners.get(n, ())} - names
                            names |= frontier
                        address = ipaddress.ip_address(r.get("dns.a") or r["dns.aaaa"]).packed
                        expected.setdefault(address, set()).update(names)
    return expected


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (Debian package tshark)")
def test_corpus_answers_match_tshark():
    captures = _dns_captures()
    total = 0
    chained = 0
    for path in captures:
        pdns, anomalies = _observe_capture(path)
        expected = _tshark_expected(path)
        ours = {ip: set(pdns.names(ip, 0)) for ip in expected}
        assert ours == expected, path.name
        assert len(pdns) == len(expected), path.name       # no address tshark did not see
        assert anomalies["dns.malformed"] == 0, path.name
        total += len(expected)
        chained += sum(1 for names in expected.values() if len(names) > 1)
    assert total > 300 and chained > 10                  # the corpus exercised plenty, CNAMEs included

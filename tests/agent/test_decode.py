"""Decoder on literal frames built with scapy: link types, tags, IPv6 headers, fragments."""

from __future__ import annotations

import struct
from collections import Counter

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.contrib.mpls import MPLS

from agent.decode import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2,
                          LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_RAW, Decoder)
from agent.defrag import Defragmenter

TCP_SEG = IP(src="10.0.0.1", dst="198.51.100.7") / TCP(sport=1234, dport=443, seq=7, flags="PA") / b"payload!"


def _decoder():
    anomalies: Counter[str] = Counter()
    return Decoder(anomalies, Defragmenter(anomalies)), anomalies


def _decode(frame, linktype=LINKTYPE_ETHERNET, ts=1):
    decoder, anomalies = _decoder()
    return decoder.decode(ts, linktype, memoryview(bytes(frame))), anomalies


def _check(pkt):
    assert pkt is not None
    assert (pkt.src, pkt.dst) == (bytes([10, 0, 0, 1]), bytes([198, 51, 100, 7]))
    assert (pkt.sport, pkt.dport, pkt.seq, pkt.proto) == (1234, 443, 7, 6)
    assert bytes(pkt.payload) == b"payload!"


def test_plain_ethernet_ipv4_tcp():
    pkt, _ = _decode(Ether() / TCP_SEG)
    _check(pkt)
    assert pkt.vlan == 0 and not pkt.truncated


def test_ethernet_padding_is_not_payload():
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="198.51.100.7") / TCP(sport=1, dport=2, flags="A"))
    pkt, _ = _decode(frame + b"\x00" * 6)
    assert bytes(pkt.payload) == b""


@pytest.mark.parametrize("tags, expected", [
    ([Dot1Q(vlan=100)], [100]),
    ([Dot1AD(vlan=10), Dot1Q(vlan=20)], [10, 20]),
    ([Dot1Q(vlan=1), Dot1Q(vlan=2), Dot1Q(vlan=3)], [1, 2, 3]),
])
def test_vlan_tags(tags, expected):
    frame = Ether()
    for tag in tags:
        frame = frame / tag
    pkt, _ = _decode(frame / TCP_SEG)
    _check(pkt)
    from agent.events import vlan_ids
    assert vlan_ids(pkt.vlan) == expected


def test_four_vlan_tags_is_an_anomaly():
    pkt, anomalies = _decode(Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / Dot1Q(vlan=4) / TCP_SEG)
    assert pkt is None and anomalies["decode.vlan_too_many_tags"] == 1


def test_mpls_label_stack():
    pkt, _ = _decode(Ether(type=0x8847) / MPLS(label=16, s=0) / MPLS(label=17, s=1) / TCP_SEG)
    _check(pkt)


def test_vlan_then_mpls():
    pkt, _ = _decode(Ether() / Dot1Q(vlan=5, type=0x8847) / MPLS(label=16, s=1) / TCP_SEG)
    _check(pkt)


def test_linux_sll_and_sll2():
    pkt, _ = _decode(CookedLinux(proto=0x0800) / TCP_SEG, LINKTYPE_LINUX_SLL)
    _check(pkt)
    sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\x00" * 8) + bytes(TCP_SEG)
    pkt, _ = _decode(sll2, LINKTYPE_LINUX_SLL2)
    _check(pkt)


def test_null_loop_and_raw_link_types():
    _check(_decode(struct.pack("<I", 2) + bytes(TCP_SEG), LINKTYPE_NULL)[0])
    _check(_decode(struct.pack("!I", 2) + bytes(TCP_SEG), LINKTYPE_NULL)[0])      # big-endian capturer
    _check(_decode(struct.pack("!I", 2) + bytes(TCP_SEG), LINKTYPE_LOOP)[0])
    _check(_decode(bytes(TCP_SEG), LINKTYPE_RAW)[0])
    _check(_decode(bytes(TCP_SEG), LINKTYPE_IPV4)[0])


def test_unknown_link_type_is_counted():
    pkt, anomalies = _decode(bytes(TCP_SEG), 147)
    assert pkt is None and anomalies["decode.unknown_linktype"] == 1


def test_ipv6_extension_headers():
    v6 = (IPv6(src="fd00::1", dst="2a00:1450::5") / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()
          / IPv6ExtHdrDestOpt() / TCP(sport=5555, dport=80, flags="PA") / b"v6 data")
    pkt, _ = _decode(Ether() / v6)
    assert pkt.proto == 6 and (pkt.sport, pkt.dport) == (5555, 80)
    assert bytes(pkt.payload) == b"v6 data" and len(pkt.src) == 16


def test_ipv6_atomic_fragment_is_decoded_immediately():
    v6 = IPv6(src="fd00::1", dst="2a00:1450::5") / IPv6ExtHdrFragment(offset=0, m=0, id=9) / UDP(sport=5353, dport=53) / b"q"
    pkt, _ = _decode(Ether() / v6)
    assert pkt.proto == 17 and bytes(pkt.payload) == b"q"


def _frag_run(frames):
    decoder, anomalies = _decoder()
    out = [decoder.decode(i, LINKTYPE_ETHERNET, memoryview(bytes(f))) for i, f in enumerate(frames)]
    done = [p for p in out if p is not None]
    return done, anomalies


def _ipv4_fragments():
    big = IP(src="10.0.0.1", dst="198.51.100.7", id=77) / UDP(sport=4000, dport=53) / (b"0123456789" * 60)
    return [Ether() / f for f in fragment(big, fragsize=200)], bytes(big[UDP].payload)


def test_ipv4_fragments_in_order():
    frames, payload = _ipv4_fragments()
    done, _ = _frag_run(frames)
    assert len(done) == 1 and bytes(done[0].payload) == payload


def test_ipv4_fragments_reversed():
    frames, payload = _ipv4_fragments()
    done, _ = _frag_run(frames[::-1])
    assert len(done) == 1 and bytes(done[0].payload) == payload


def test_ipv4_overlapping_fragments_first_wins():
    base = IP(src="10.0.0.1", dst="198.51.100.7", id=5, proto=17)
    udp = bytes(UDP(sport=1, dport=2, len=8 + 24)) + b"A" * 24        # 32 bytes of UDP datagram
    first = Ether() / (base.copy()) / udp[:16]
    first[IP].flags = "MF"
    evil = Ether() / base.copy() / (b"E" * 16)                         # overlaps bytes 8..24
    evil[IP].frag = 1
    evil[IP].flags = "MF"
    last = Ether() / base.copy() / udp[16:]
    last[IP].frag = 2
    done, anomalies = _frag_run([first, evil, last])
    assert len(done) == 1
    # 8..16 was held from the first fragment (its A's win); 16..24 was a hole the evil one filled
    # first, so its E's win over the last fragment's A's.
    assert bytes(done[0].payload) == b"A" * 8 + b"E" * 8 + b"A" * 8
    assert anomalies["frag.overlap_conflict"] == 2


def test_ipv6_fragments_reversed():
    v6 = IPv6(src="fd00::1", dst="2a00:1450::5") / IPv6ExtHdrFragment(id=1234) / UDP(sport=7, dport=53) / (b"x" * 1000)
    from scapy.layers.inet6 import fragment6
    frames = [Ether() / f for f in fragment6(v6, 400)]
    done, _ = _frag_run(frames[::-1])
    assert len(done) == 1 and bytes(done[0].payload) == b"x" * 1000


def test_fragment_tracker_limit_evicts_oldest():
    anomalies: Counter[str] = Counter()
    defrag = Defragmenter(anomalies, max_trackers=4)
    for ident in range(10):
        defrag.add_v4(0, b"\x01" * 4, b"\x02" * 4, ident, 17, 0, True, memoryview(b"x" * 8), False)
    assert anomalies["limit.frag_trackers"] == 6
    assert defrag.memuse == 4 * 8


def test_fragment_timeout():
    anomalies: Counter[str] = Counter()
    defrag = Defragmenter(anomalies, timeout_us=1000)
    defrag.add_v4(0, b"\x01" * 4, b"\x02" * 4, 1, 17, 0, True, memoryview(b"x" * 8), False)
    defrag.add_v4(5000, b"\x01" * 4, b"\x02" * 4, 2, 17, 0, True, memoryview(b"x" * 8), False)
    assert anomalies["frag.timeout"] == 1


def test_oversized_fragment_is_rejected():
    anomalies: Counter[str] = Counter()
    defrag = Defragmenter(anomalies)
    assert defrag.add_v4(0, b"\x01" * 4, b"\x02" * 4, 1, 17, 65528, False, memoryview(b"x" * 100), False) is None
    assert anomalies["frag.too_large"] == 1


def test_snaplen_truncated_tcp_payload_is_flagged():
    frame = bytes(Ether() / TCP_SEG)
    pkt, _ = _decode(frame[:-3])
    assert pkt.truncated and bytes(pkt.payload) == b"paylo"


@pytest.mark.parametrize("frame", [b"", b"\x00" * 13, bytes(Ether() / IP(ihl=2) / TCP())[:40],
                                   bytes(Ether()) + b"\x45" + b"\x00" * 10, bytes(Ether() / IP() / TCP(dataofs=15))])
def test_garbage_never_raises(frame):
    pkt, anomalies = _decode(frame)
    assert pkt is None and sum(anomalies.values()) >= 1


def test_random_frames_never_raise():
    import random
    rng = random.Random(1)
    decoder, _ = _decoder()
    seed_frame = bytes(Ether() / Dot1Q(vlan=3) / TCP_SEG)
    for _ in range(3000):
        frame = bytearray(seed_frame)
        for _ in range(rng.randint(1, 6)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        frame = frame[:rng.randint(0, len(frame))]
        for lt in (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL2, LINKTYPE_NULL):
            decoder.decode(0, lt, memoryview(bytes(frame)))

"""TCP reassembly on captures built with scapy: order, overlaps, gaps, wraparound, limits."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from agent.flows import FlowLimits
from tests.streams import TSHARK_GAP, reassemble

CLIENT, SERVER = "10.1.1.1", "203.0.113.9"
CPORT, SPORT = 40000, 80
ISN_C, ISN_S = 1000, 5000


def _pkt(src, dst, sport, dport, seq, flags, data=b"", t=0.0, ack=0):
    p = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, seq=seq % 2**32, ack=ack % 2**32,
                                              flags=flags) / data
    p.time = 1_700_000_000 + t
    return p


def _conversation(tmp_path: Path, client_segments, *, isn_c=ISN_C, handshake=True, server_data=b"",
                  fin=True, name="c.pcap") -> Path:
    """Handshake, the client segments as (offset into the stream, bytes) in the given order, FINs."""
    pkts = []
    t = 0.0
    if handshake:
        pkts += [_pkt(CLIENT, SERVER, CPORT, SPORT, isn_c, "S", t=t),
                 _pkt(SERVER, CLIENT, SPORT, CPORT, ISN_S, "SA", ack=isn_c + 1, t=t + 0.01),
                 _pkt(CLIENT, SERVER, CPORT, SPORT, isn_c + 1, "A", ack=ISN_S + 1, t=t + 0.02)]
    t = 0.1
    end = 0
    for off, data in client_segments:
        t += 0.001
        pkts.append(_pkt(CLIENT, SERVER, CPORT, SPORT, isn_c + 1 + off, "PA", data, t=t, ack=ISN_S + 1))
        end = max(end, off + len(data))
    if server_data:
        t += 0.001
        pkts.append(_pkt(SERVER, CLIENT, SPORT, CPORT, ISN_S + 1, "PA", server_data, t=t, ack=isn_c + 1 + end))
    if fin:
        t += 0.001
        pkts.append(_pkt(CLIENT, SERVER, CPORT, SPORT, isn_c + 1 + end, "FA", t=t, ack=ISN_S + 1 + len(server_data)))
        pkts.append(_pkt(SERVER, CLIENT, SPORT, CPORT, ISN_S + 1 + len(server_data), "FA", t=t + 0.001,
                         ack=isn_c + 2 + end))
    path = tmp_path / name
    wrpcap(str(path), pkts)
    return path


def _only_flow(path, limits=None):
    flows, anomalies = reassemble(path, limits)
    assert len(flows) == 1
    return flows[0], anomalies


def test_in_order_and_server_direction(tmp_path):
    flow, anomalies = _only_flow(_conversation(tmp_path, [(0, b"GET / HTTP/1.1\r\n"), (16, b"Host: x\r\n\r\n")],
                                               server_data=b"HTTP/1.1 200 OK\r\n\r\n"))
    assert flow.stream(0) == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert flow.stream(1) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert flow.endpoints == (CLIENT, CPORT, SERVER, SPORT)
    assert flow.ended == [True, True]
    assert not anomalies["tcp.gap"]


def test_out_of_order_segments_are_reordered(tmp_path):
    flow, _ = _only_flow(_conversation(tmp_path, [(10, b"KLMNOPQRST"), (0, b"ABCDEFGHIJ"), (20, b"UVWXYZ")]))
    assert flow.stream(0) == b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def test_tiny_segments_one_byte_each_reversed(tmp_path):
    text = b"POST /upload HTTP/1.1\r\n"
    segments = [(i, text[i:i + 1]) for i in range(len(text))]
    flow, _ = _only_flow(_conversation(tmp_path, segments[::-1]))
    assert flow.stream(0) == text


def test_retransmission_same_data_is_not_duplicated(tmp_path):
    flow, anomalies = _only_flow(_conversation(tmp_path, [(0, b"HELLO"), (0, b"HELLO"), (5, b"WORLD")]))
    assert flow.stream(0) == b"HELLOWORLD"
    assert anomalies["tcp.retransmission"] == 1
    assert anomalies["tcp.overlap_conflict"] == 0


def test_overlap_with_different_data_first_wins_and_is_counted(tmp_path):
    flow, anomalies = _only_flow(_conversation(tmp_path, [(0, b"GOOD"), (0, b"EVIL"), (4, b"DATA")]))
    assert flow.stream(0) == b"GOODDATA"
    assert anomalies["tcp.overlap_conflict"] == 1


def test_partial_overlap_of_queued_segments_first_wins(tmp_path):
    # Hole at 0..2; then two queued segments that overlap with different bytes.
    flow, anomalies = _only_flow(_conversation(tmp_path, [(4, b"efgh"), (2, b"CDXXij"), (0, b"ab")]))
    assert flow.stream(0) == b"abCDefgh"
    assert anomalies["tcp.overlap_conflict"] == 1


def test_gap_is_delivered_as_a_marker(tmp_path):
    flow, anomalies = _only_flow(_conversation(tmp_path, [(0, b"VERY"), (8, b"DATA")]))
    assert flow.gaps[0] == [4]
    assert flow.stream(0) == b"VERY" + TSHARK_GAP % 4 + b"DATA"
    assert anomalies["tcp.gap"] == 1


def test_missing_syn_midstream_pickup(tmp_path):
    flow, anomalies = _only_flow(_conversation(tmp_path, [(0, b"abc"), (3, b"def")], handshake=False))
    assert flow.stream(0) == b"abcdef"
    assert anomalies["tcp.midstream"] >= 1
    # No SYN: the higher port is the client.
    assert flow.endpoints[1] == CPORT


def test_sequence_wraparound(tmp_path):
    isn = 2**32 - 6          # the stream crosses 2**32 after 5 bytes
    flow, anomalies = _only_flow(_conversation(tmp_path, [(0, b"01234"), (5, b"56789"), (10, b"abcdef")], isn_c=isn))
    assert flow.stream(0) == b"0123456789abcdef"
    assert not anomalies["tcp.gap"]


def test_wraparound_out_of_order(tmp_path):
    isn = 2**32 - 3
    flow, _ = _only_flow(_conversation(tmp_path, [(6, b"ghij"), (0, b"abcdef")], isn_c=isn))
    assert flow.stream(0) == b"abcdefghij"


def test_tcp_fast_open_data_in_syn(tmp_path):
    pkts = [_pkt(CLIENT, SERVER, CPORT, SPORT, ISN_C, "S", b"TFO-DATA", t=0),
            _pkt(SERVER, CLIENT, SPORT, CPORT, ISN_S, "SA", ack=ISN_C + 9, t=0.01),
            _pkt(CLIENT, SERVER, CPORT, SPORT, ISN_C + 9, "PA", b"+MORE", t=0.02, ack=ISN_S + 1)]
    path = tmp_path / "tfo.pcap"
    wrpcap(str(path), pkts)
    flow, _ = _only_flow(path)
    assert flow.stream(0) == b"TFO-DATA+MORE"


def test_urgent_data_stays_inline(tmp_path):
    pkts = [_pkt(CLIENT, SERVER, CPORT, SPORT, ISN_C, "S"),
            _pkt(SERVER, CLIENT, SPORT, CPORT, ISN_S, "SA", ack=ISN_C + 1),
            _pkt(CLIENT, SERVER, CPORT, SPORT, ISN_C + 1, "PAU", b"GET /x", t=0.1)]
    pkts[-1][TCP].urgptr = 3
    path = tmp_path / "urg.pcap"
    wrpcap(str(path), pkts)
    flow, anomalies = _only_flow(path)
    assert flow.stream(0) == b"GET /x"
    assert anomalies["tcp.urgent"] == 1


def test_stream_depth_limit(tmp_path):
    limits = FlowLimits(stream_depth=6)
    flow, anomalies = _only_flow(_conversation(tmp_path, [(0, b"abcd"), (4, b"efgh"), (8, b"ijkl")]), limits)
    assert flow.stream(0) == b"abcdef"
    assert anomalies["limit.stream_depth"] == 1


def test_out_of_order_queue_limit_forces_a_gap(tmp_path):
    # The hole at 0..4 is never filled; the queue limit makes us give up and move on.
    segments = [(4 + 100 * i, bytes([65 + i]) * 100) for i in range(5)]
    limits = FlowLimits(reasm_stream_queue=250)
    flow, anomalies = _only_flow(_conversation(tmp_path, segments, fin=False), limits)
    assert anomalies["limit.reasm_stream"] >= 1
    assert flow.gaps[0][0] == 4
    assert flow.stream(0, gap_markers=False) == b"".join(d for _, d in segments)


def test_global_memcap_forces_a_gap(tmp_path):
    segments = [(4 + 100 * i, bytes([65 + i]) * 100) for i in range(5)]
    limits = FlowLimits(reasm_memcap=150)
    flow, anomalies = _only_flow(_conversation(tmp_path, segments, fin=False), limits)
    assert anomalies["limit.reasm_memcap"] >= 1
    assert flow.stream(0, gap_markers=False) == b"".join(d for _, d in segments)


def test_rst_flushes_queued_data(tmp_path):
    pkts = [_pkt(CLIENT, SERVER, CPORT, SPORT, ISN_C, "S"),
            _pkt(SERVER, CLIENT, SPORT, CPORT, ISN_S, "SA", ack=ISN_C + 1),
            _pkt(CLIENT, SERVER, CPORT, SPORT, ISN_C + 1 + 3, "PA", b"def", t=0.1),
            _pkt(CLIENT, SERVER, CPORT, SPORT, ISN_C + 1 + 6, "R", t=0.2)]
    path = tmp_path / "rst.pcap"
    wrpcap(str(path), pkts)
    flow, _ = _only_flow(path)
    assert flow.ended == [True, True]
    assert flow.stream(0) == TSHARK_GAP % 3 + b"def"

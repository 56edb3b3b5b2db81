"""Flow table: orientation rules, states, timeouts, port reuse, bounded size."""

from __future__ import annotations

from collections import Counter

from agent.decode import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Packet
from agent.flows import FlowLimits, FlowTable
from agent.reassembly import TOCLIENT, TOSERVER

A, B = bytes([10, 0, 0, 1]), bytes([198, 51, 100, 2])
SEC = 1_000_000


def _tcp(src, sport, dst, dport, flags, ts=0, seq=0, payload=b""):
    return Packet(ts, 0, src, dst, PROTO_TCP, sport, dport, flags, seq, 0, 0, memoryview(payload), False,
                  54 + len(payload))


def _udp(src, sport, dst, dport, ts=0, payload=b"x"):
    return Packet(ts, 0, src, dst, PROTO_UDP, sport, dport, 0, 0, 0, 0, memoryview(payload), False, 42)


def _table(**limits):
    return FlowTable(FlowLimits(**limits), Counter())


def test_syn_sender_is_client_even_from_a_low_port():
    table = _table()
    flow, direction = table.packet(_tcp(B, 80, A, 50000, TCP_SYN))
    assert (flow.client, flow.cport, direction) == (B, 80, TOSERVER)
    _, back = table.packet(_tcp(A, 50000, B, 80, TCP_SYN | TCP_ACK))
    assert back == TOCLIENT


def test_syn_ack_first_makes_its_receiver_the_client():
    flow, direction = _table().packet(_tcp(B, 443, A, 51000, TCP_SYN | TCP_ACK))
    assert (flow.client, flow.cport, direction) == (A, 51000, TOCLIENT)


def test_midstream_higher_port_is_client():
    flow, direction = _table().packet(_tcp(B, 443, A, 51000, TCP_ACK, payload=b"data"))
    assert (flow.client, flow.server, direction) == (A, B, TOCLIENT)


def test_udp_equal_ports_first_sender_is_client():
    flow, direction = _table().packet(_udp(B, 123, A, 123))
    assert (flow.client, direction) == (B, TOSERVER)


def test_counters_per_direction_and_states():
    table = _table()
    table.packet(_tcp(A, 50000, B, 80, TCP_SYN))
    flow, _ = table.packet(_tcp(B, 80, A, 50000, TCP_SYN | TCP_ACK))
    assert flow.state == "established"
    table.packet(_tcp(A, 50000, B, 80, TCP_FIN | TCP_ACK, ts=1))
    table.packet(_tcp(B, 80, A, 50000, TCP_FIN | TCP_ACK, ts=2))
    assert flow.state == "closed"
    assert flow.pkts == [2, 2] and flow.bytes == [108, 108]


def test_closed_flow_times_out_with_reason_timeout():
    table = _table(tcp_closed_timeout_us=5 * SEC)
    table.packet(_tcp(A, 50000, B, 80, TCP_SYN))
    table.packet(_tcp(B, 80, A, 50000, TCP_RST | TCP_ACK, ts=SEC))
    table.packet(_udp(A, 1, B, 2, ts=10 * SEC))            # time passes
    ended = table.expired()
    assert [(f.cport, f.reason, f.state) for f in ended] == [(50000, "timeout", "closed")]
    assert len(table) == 1


def test_established_flow_survives_short_timeouts():
    table = _table(tcp_new_timeout_us=5 * SEC, tcp_established_timeout_us=100 * SEC)
    table.packet(_tcp(A, 50000, B, 80, TCP_SYN))
    table.packet(_tcp(B, 80, A, 50000, TCP_SYN | TCP_ACK))
    table.packet(_udp(A, 1, B, 2, ts=50 * SEC))
    assert table.expired() == []
    table.packet(_udp(A, 1, B, 2, ts=102 * SEC))
    assert [f.cport for f in table.expired()] == [50000]


def test_new_syn_on_closed_tuple_starts_a_new_flow():
    table = _table()
    first, _ = table.packet(_tcp(A, 50000, B, 80, TCP_SYN))
    table.packet(_tcp(A, 50000, B, 80, TCP_RST, ts=1))
    second, _ = table.packet(_tcp(A, 50000, B, 80, TCP_SYN, ts=2, seq=99))
    assert second is not first
    assert [(f is first, f.reason) for f in table.expired()] == [(True, "forced")]
    assert first.flow_id != second.flow_id


def test_table_is_bounded_and_evicts_least_recently_active():
    table = _table(max_flows=3)
    for port in range(1, 4):
        table.packet(_udp(A, 40000 + port, B, 53, ts=port * 2 * SEC))
    table.packet(_udp(A, 40001, B, 53, ts=8 * SEC))       # flow 1 is active again
    table.packet(_udp(A, 40009, B, 53, ts=9 * SEC))       # a fourth flow: the table is full
    ended = table.expired()
    assert [(f.cport, f.reason) for f in ended] == [(40002, "forced")]
    assert table.anomalies["limit.flows"] == 1
    assert len(table) == 3


def test_drain_ends_everything_with_shutdown():
    table = _table()
    table.packet(_udp(A, 1000, B, 53))
    table.packet(_tcp(A, 50000, B, 80, TCP_SYN))
    assert sorted(f.reason for f in table.drain()) == ["shutdown", "shutdown"]
    assert len(table) == 0


def test_flow_id_is_stable_for_the_same_flow():
    one, _ = _table().packet(_udp(A, 1000, B, 53, ts=5))
    two, _ = _table().packet(_udp(B, 53, A, 1000, ts=5))
    assert one.flow_id == two.flow_id and 0 < one.flow_id < 2**53


def test_bypass_gives_queued_bytes_back_and_ends_the_consumer():
    """A flow bypassed with a segment still waiting for a hole (a TLS flow once its handshake is
    seen): the out-of-order bytes go back to the memcap, and the consumer hears that both
    directions ended (a consumer holding bytes of its own gives them back then)."""
    ended = []

    class Recorder:
        def data(self, direction, data): pass
        def gap(self, direction, nbytes): pass
        def end(self, direction): ended.append(direction)

    table = FlowTable(FlowLimits(), Counter(), lambda flow: Recorder())
    flow, _ = table.packet(_tcp(A, 50000, B, 443, TCP_SYN, seq=100))
    table.packet(_tcp(B, 443, A, 50000, TCP_SYN | TCP_ACK, ts=1, seq=900))
    table.packet(_tcp(A, 50000, B, 443, TCP_ACK, ts=2, seq=101, payload=b"hello"))
    table.packet(_tcp(A, 50000, B, 443, TCP_ACK, ts=3, seq=200, payload=b"x" * 1000))    # after a hole
    assert table.budget.used == 1000
    table.bypass(flow)
    assert table.budget.used == 0 and flow.streams is None and sorted(ended) == [TOSERVER, TOCLIENT]
    table.bypass(flow)
    table.packet(_tcp(A, 50000, B, 443, TCP_ACK | TCP_FIN, ts=4, seq=1200))
    list(table.drain())
    assert table.budget.used == 0 and sorted(ended) == [TOSERVER, TOCLIENT]

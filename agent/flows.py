"""Bidirectional flow table: Packet -> (Flow, direction), timeouts, bounded size.

Which side is the client (decided once, when the flow is created):
1. a TCP SYN without ACK: its sender is the client;
2. a TCP SYN+ACK: its receiver is the client;
3. anything else (TCP picked up mid-stream, UDP): the side with the higher port is the client
   (ephemeral ports are high, services are low); equal ports: the first sender is the client.

Flow ends (Suricata's vocabulary for `flow.reason`):
- `timeout`: idle longer than the timeout of its state (new / established / closed);
  a TCP flow becomes `closed` after FIN from both sides or a RST, and is then kept a short
  time so late ACKs do not start a new flow;
- `forced`: evicted because the table is full (least recently active first) or a new SYN
  reused the 5-tuple of a closed connection;
- `shutdown`: end of input.
Queued reassembly data is flushed (around holes, with explicit gaps) when the flow gets a RST
and when the flow ends, so no captured byte is lost at any end. Data after a FIN or RST is still
delivered (and counted): forged teardown packets are a classic way to blind a monitor.

The table keeps each flow under both orientations of its key so that one dict lookup per
packet yields the flow and the packet's direction.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agent.decode import PROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TCP_URG, Packet
from agent.reassembly import TOCLIENT, TOSERVER, ReassemblyBudget, StreamConsumer, TcpStream

STATE_NEW = "new"
STATE_ESTABLISHED = "established"
STATE_CLOSED = "closed"

REASON_TIMEOUT = "timeout"
REASON_FORCED = "forced"
REASON_SHUTDOWN = "shutdown"

_FLOW_ID_MASK = (1 << 51) - 1     # Suricata-sized ids; stays exact in JSON readers using doubles
_LRU_TOUCH_US = 1_000_000          # re-rank a flow in the LRU at most once per second of capture time


@dataclass(frozen=True, slots=True)
class FlowLimits:
    max_flows: int = 200_000
    tcp_new_timeout_us: int = 30_000_000
    tcp_established_timeout_us: int = 600_000_000
    tcp_closed_timeout_us: int = 10_000_000
    udp_timeout_us: int = 120_000_000
    reasm_memcap: int = 256 << 20          # out-of-order bytes held across all streams
    reasm_stream_queue: int = 1 << 20      # out-of-order bytes held per stream direction
    stream_depth: int = 0                  # bytes delivered per direction; 0 = no limit


class Flow:
    """One connection, oriented client -> server. Counters are indexed by direction."""

    __slots__ = ("key", "proto", "vlan", "client", "server", "cport", "sport", "start", "last",
                 "touched", "pkts", "bytes", "state", "fins", "streams", "consumer",
                 "reason", "source", "user", "alerted")

    def __init__(self, key: tuple[object, ...], proto: int, vlan: int, client: bytes, cport: int,
                 server: bytes, sport: int, ts: int, source: int) -> None:
        self.key = key
        self.proto = proto
        self.vlan = vlan
        self.client = client
        self.cport = cport
        self.server = server
        self.sport = sport
        self.start = ts
        self.last = ts
        self.touched = ts
        self.pkts = [0, 0]
        self.bytes = [0, 0]
        self.state = STATE_NEW
        self.fins = 0                      # bit per direction that sent FIN
        self.streams: list[TcpStream] | None = None
        self.consumer: StreamConsumer | None = None
        self.reason = ""
        self.source = source               # index of the capture file the flow started in
        self.user: object = None           # the pipeline's per-flow state (findings)
        self.alerted = False

    @property
    def flow_id(self) -> int:
        """Stable for the same flow in the same capture, whatever the worker or run."""
        digest = hashlib.blake2b(b"%d|%d|%d|%d|%d|" % (self.proto, self.vlan, self.cport, self.sport, self.start)
                                 + self.client + b"|" + self.server, digest_size=8).digest()
        return int.from_bytes(digest, "big") & _FLOW_ID_MASK


ConsumerFactory = Callable[[Flow], StreamConsumer | None]


class FlowTable:
    """Maps packets to flows; yields flows that ended through `expired()` and `drain()`."""

    def __init__(self, limits: FlowLimits, anomalies: Counter[str],
                 consumer_factory: ConsumerFactory | None = None) -> None:
        self.limits = limits
        self.anomalies = anomalies
        self.consumer_factory = consumer_factory
        self.budget = ReassemblyBudget(limits.reasm_memcap)
        self.created = 0
        self.evicted = 0
        self._index: dict[tuple[object, ...], tuple[Flow, int]] = {}
        self._lru: OrderedDict[tuple[object, ...], Flow] = OrderedDict()   # least recently active first
        self.ended: list[Flow] = []     # ended, not yet taken by expired()
        self._next_sweep = 0
        self.now = 0

    def __len__(self) -> int:
        return len(self._lru)

    def packet(self, pkt: Packet, source: int = 0) -> tuple[Flow, int]:
        """Account one packet to its flow (creating it if needed) and feed TCP reassembly."""
        ts = pkt.ts
        if ts > self.now:
            self.now = ts
            if ts >= self._next_sweep:
                self._sweep(ts)
        key = (pkt.vlan, pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport)
        hit = self._index.get(key)
        if hit is None:
            flow, direction = self._create(pkt, key, source)
        else:
            flow, direction = hit
            if pkt.proto == PROTO_TCP and flow.state == STATE_CLOSED and (pkt.flags & (TCP_SYN | TCP_ACK)) == TCP_SYN:
                # Port reuse: a fresh connection on the 5-tuple of a finished one.
                self._end(flow, REASON_FORCED)
                flow, direction = self._create(pkt, key, source)
            elif ts - flow.touched > _LRU_TOUCH_US:
                flow.touched = ts
                self._lru.move_to_end(flow.key)
        if ts > flow.last:
            flow.last = ts
        flow.pkts[direction] += 1
        flow.bytes[direction] += pkt.length
        if pkt.proto == PROTO_TCP:
            self._tcp(flow, direction, pkt)
        elif flow.state == STATE_NEW and flow.pkts[1 - direction]:
            flow.state = STATE_ESTABLISHED
        return flow, direction

    def expired(self) -> list[Flow]:
        """Flows that ended since the last call, in the order they ended."""
        ended, self.ended = self.ended, []
        return ended

    def drain(self) -> Iterator[Flow]:
        """End every remaining flow (end of input), oldest first."""
        yield from self.expired()
        while self._lru:
            _, flow = self._lru.popitem(last=False)
            self._forget(flow)
            self._finish(flow, REASON_SHUTDOWN)
            yield flow

    # -- internals ---------------------------------------------------------------------------

    def _create(self, pkt: Packet, key: tuple[object, ...], source: int) -> tuple[Flow, int]:
        if len(self._lru) >= self.limits.max_flows:
            _, victim = self._lru.popitem(last=False)
            self.anomalies["limit.flows"] += 1
            self.evicted += 1
            self._forget(victim)
            self._finish(victim, REASON_FORCED)
            self.ended.append(victim)
        flags = pkt.flags
        if pkt.proto == PROTO_TCP and flags & TCP_SYN:
            src_is_client = not flags & TCP_ACK
        elif pkt.sport != pkt.dport:
            src_is_client = pkt.sport > pkt.dport
        else:
            src_is_client = True
        if src_is_client:
            flow = Flow(key, pkt.proto, pkt.vlan, pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.ts, source)
            direction = TOSERVER
        else:
            flow = Flow(key, pkt.proto, pkt.vlan, pkt.dst, pkt.dport, pkt.src, pkt.sport, pkt.ts, source)
            direction = TOCLIENT
        reverse = (pkt.vlan, pkt.proto, pkt.dst, pkt.dport, pkt.src, pkt.sport)
        self._index[key] = (flow, direction)
        self._index[reverse] = (flow, 1 - direction)
        flow.key = key
        self._lru[key] = flow
        self.created += 1
        if self.consumer_factory is not None:
            flow.consumer = self.consumer_factory(flow)
        if pkt.proto == PROTO_TCP and flow.consumer is not None:
            limits = self.limits
            flow.streams = [TcpStream(d, flow.consumer, self.anomalies, self.budget,
                                      limits.reasm_stream_queue, limits.stream_depth) for d in (TOSERVER, TOCLIENT)]
        return flow, direction

    def _tcp(self, flow: Flow, direction: int, pkt: Packet) -> None:
        flags = pkt.flags
        if flow.state == STATE_NEW and flags & TCP_ACK and (flow.pkts[0] and flow.pkts[1]):
            flow.state = STATE_ESTABLISHED
        streams = flow.streams
        if streams is not None:
            stream = streams[direction]
            if flags & TCP_SYN:
                stream.syn(pkt.seq)
            if pkt.payload or flags & TCP_FIN:
                stream.segment(pkt.seq, pkt.payload, bool(flags & TCP_FIN), bool(flags & TCP_URG),
                               pkt.truncated, bool(flags & TCP_SYN))
        if flags & TCP_RST:
            # Flush, don't end: a forged RST (an evasion classic) must not stop inspection of
            # data that still follows; the flow ends by its (short) closed timeout.
            if streams is not None:
                streams[0].flush()
                streams[1].flush()
            flow.state = STATE_CLOSED
        elif flags & TCP_FIN:
            flow.fins |= 1 << direction
            if flow.fins == 3:
                flow.state = STATE_CLOSED

    def _timeout_for(self, flow: Flow) -> int:
        limits = self.limits
        if flow.proto != PROTO_TCP:
            return limits.udp_timeout_us
        if flow.state == STATE_ESTABLISHED:
            return limits.tcp_established_timeout_us
        if flow.state == STATE_CLOSED:
            return limits.tcp_closed_timeout_us
        return limits.tcp_new_timeout_us

    def _sweep(self, now: int) -> None:
        """Expire idle flows. Runs at most once per second of capture time."""
        self._next_sweep = now + 1_000_000
        limits = self.limits
        shortest = min(limits.tcp_closed_timeout_us, limits.tcp_new_timeout_us, limits.udp_timeout_us)
        expired = []
        # The LRU is ordered by last activity (to within a second), so stop at the first flow
        # that is younger than the shortest timeout: nothing after it can be due.
        for flow in self._lru.values():
            if now - flow.last < shortest - _LRU_TOUCH_US:
                break
            if now - flow.last > self._timeout_for(flow):
                expired.append(flow)
        for flow in expired:
            del self._lru[flow.key]
            self._forget(flow)
            self._finish(flow, REASON_TIMEOUT)
            self.ended.append(flow)

    def _end(self, flow: Flow, reason: str) -> None:
        del self._lru[flow.key]
        self._forget(flow)
        self._finish(flow, reason)
        self.ended.append(flow)

    def _forget(self, flow: Flow) -> None:
        key = flow.key
        self._index.pop(key, None)
        self._index.pop((key[0], key[1], key[4], key[5], key[2], key[3]), None)

    def _finish(self, flow: Flow, reason: str) -> None:
        flow.reason = reason
        if flow.streams is not None:
            flow.streams[0].finish()
            flow.streams[1].finish()

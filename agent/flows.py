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
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agent.decode import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TCP_URG, Packet
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

    __slots__ = ("key", "rkey", "proto", "vlan", "client", "server", "cport", "sport", "start", "last",
                 "touched", "queue", "pkts", "bytes", "state", "fins", "streams", "consumer",
                 "reason", "source", "user", "alerted", "_flow_id")

    def __init__(self, key: bytes, proto: int, vlan: int, client: bytes, cport: int,
                 server: bytes, sport: int, ts: int, source: int) -> None:
        self.key = key                     # index key of the first packet's orientation
        self.rkey = key                    # and of the other one
        self.proto = proto
        self.vlan = vlan
        self.client = client
        self.cport = cport
        self.server = server
        self.sport = sport
        self.start = ts
        self.last = ts
        self.touched = ts
        self.queue: OrderedDict[Flow, None] | None = None   # the table's expiry queue holding it
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
        self._flow_id = -1

    @property
    def flow_id(self) -> int:
        """Stable for the same flow in the same capture, whatever the worker or run.

        Computed on first use (events, ordering keys ask several times per flow) from fields
        that never change once the flow exists."""
        if self._flow_id < 0:
            digest = hashlib.blake2b(b"%d|%d|%d|%d|%d|" % (self.proto, self.vlan, self.cport, self.sport, self.start)
                                     + self.client + b"|" + self.server, digest_size=8).digest()
            self._flow_id = int.from_bytes(digest, "big") & _FLOW_ID_MASK
        return self._flow_id


ConsumerFactory = Callable[[Flow], StreamConsumer | None]

_pack_ports = struct.Struct("!HH").pack


def flow_key(vlan: int, src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """Index key within one protocol: addresses and ports as on the wire, then the VLAN ids.

    For untagged IPv4 this is exactly bytes 12..24 of the IP header plus the two port fields
    (the frame's bytes 26..38 behind Ethernet), which lets the fast path take the key with one
    slice. Lengths keep families apart: 12 bytes IPv4, 36 IPv6, +8 with VLAN tags.
    """
    key = src + dst + _pack_ports(sport, dport)
    return key + vlan.to_bytes(8, "big") if vlan else key


class FlowTable:
    """Maps packets to flows; yields flows that ended through `expired()` and `drain()`."""

    def __init__(self, limits: FlowLimits, anomalies: Counter[str],
                 consumer_factory: ConsumerFactory | None = None) -> None:
        self.limits = limits
        self.anomalies = anomalies
        self.consumer_factory = consumer_factory
        self.budget = ReassemblyBudget(limits.reasm_memcap)
        self.created = 0
        # indexes, now, next_sweep and each flow's queue are also used by agent.fastpath, which
        # repeats the common case of packet() inline; keep the two in step.
        self.indexes: dict[int, dict[bytes, tuple[Flow, int]]] = {PROTO_TCP: {}, PROTO_UDP: {}}
        # One expiry queue per timeout value, each least recently active first: a sweep pops
        # expired flows off the fronts and stops at the first live one, never scanning the rest.
        self.queues: dict[int, OrderedDict[Flow, None]] = {}
        self.count = 0
        self.ended: list[Flow] = []     # ended, not yet taken by expired()
        self.next_sweep = 0
        self.now = 0

    def __len__(self) -> int:
        return self.count

    def packet(self, pkt: Packet, source: int = 0) -> tuple[Flow, int]:
        """Account one packet to its flow (creating it if needed) and feed TCP reassembly."""
        ts = pkt.ts
        if ts > self.now:
            self.now = ts
            if ts >= self.next_sweep:
                self._sweep(ts)
        key = flow_key(pkt.vlan, pkt.src, pkt.sport, pkt.dst, pkt.dport)
        hit = self.indexes[pkt.proto].get(key)
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
                flow.queue.move_to_end(flow)  # type: ignore[union-attr]
        if ts > flow.last:
            flow.last = ts
        flow.pkts[direction] += 1
        flow.bytes[direction] += pkt.length
        if pkt.proto == PROTO_TCP:
            self._tcp(flow, direction, pkt)
        elif flow.state == STATE_NEW and flow.pkts[1 - direction]:
            self._set_state(flow, STATE_ESTABLISHED)
        return flow, direction

    def advance(self, ts: int) -> None:
        """Move the clock to a packet's time without accounting the packet (a replay worker sees
        every frame but keeps only its share of the flows)."""
        if ts > self.now:
            self.now = ts
            if ts >= self.next_sweep:
                self._sweep(ts)

    def bypass(self, flow: Flow) -> None:
        """Stop reassembling a flow whose consumer needs nothing more (ciphertext after the
        handshake); its packets are then only counted, which the fast path does inline.
        Out-of-order bytes still queued go back to the memcap, and the consumer is told the
        directions ended (it may hold bytes of its own)."""
        streams = flow.streams
        if streams is None:
            return
        flow.streams = None
        streams[0].abandon()
        streams[1].abandon()

    def expired(self) -> list[Flow]:
        """Flows that ended since the last call, in the order they ended."""
        ended, self.ended = self.ended, []
        return ended

    def drain(self) -> Iterator[Flow]:
        """End every remaining flow (end of input), oldest first."""
        yield from self.expired()
        remaining = [flow for queue in self.queues.values() for flow in queue]
        remaining.sort(key=lambda f: f.touched)         # stable: ties keep queue order
        for flow in remaining:
            self._remove(flow)
            self._finish(flow, REASON_SHUTDOWN)
            yield flow

    # -- internals ---------------------------------------------------------------------------

    def _create(self, pkt: Packet, key: bytes, source: int) -> tuple[Flow, int]:
        if self.count >= self.limits.max_flows:
            victim = min((next(iter(q)) for q in self.queues.values() if q), key=lambda f: f.touched)
            self._remove(victim)
            self.anomalies["limit.flows"] += 1
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
        reverse = flow_key(pkt.vlan, pkt.dst, pkt.dport, pkt.src, pkt.sport)
        index = self.indexes[pkt.proto]
        index[key] = (flow, direction)
        index[reverse] = (flow, 1 - direction)
        flow.rkey = reverse
        self._enqueue(flow)
        self.count += 1
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
            self._set_state(flow, STATE_ESTABLISHED)
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
            self._set_state(flow, STATE_CLOSED)
        elif flags & TCP_FIN:
            flow.fins |= 1 << direction
            if flow.fins == 3:
                self._set_state(flow, STATE_CLOSED)

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
        self.next_sweep = now + 1_000_000
        for timeout, queue in self.queues.items():
            expired = []
            for flow in queue:
                if now - flow.touched <= timeout:
                    # Queues are ordered by `touched`, and last >= touched: no flow from here on
                    # can be idle for longer than the timeout.
                    break
                if now - flow.last > timeout:
                    # Exactly the idle flows, whatever else shares the queue: a replay worker
                    # holding a subset of the flows ends the same flows at the same packet.
                    expired.append(flow)
            for flow in expired:
                self._remove(flow)
                self._finish(flow, REASON_TIMEOUT)
                self.ended.append(flow)

    def _end(self, flow: Flow, reason: str) -> None:
        self._remove(flow)
        self._finish(flow, reason)
        self.ended.append(flow)

    def _set_state(self, flow: Flow, state: str) -> None:
        flow.state = state
        if flow.queue is not None:
            del flow.queue[flow]
            flow.touched = max(flow.touched, flow.last)   # it goes to the back: keep queues ordered
            self._enqueue(flow)

    def _enqueue(self, flow: Flow) -> None:
        timeout = self._timeout_for(flow)
        queue = self.queues.get(timeout)
        if queue is None:
            queue = self.queues[timeout] = OrderedDict()
        queue[flow] = None
        flow.queue = queue

    def _remove(self, flow: Flow) -> None:
        """Take a flow out of the index and its queue (it is ending)."""
        if flow.queue is not None:
            del flow.queue[flow]
            flow.queue = None
            self.count -= 1
        self._forget(flow)

    def _forget(self, flow: Flow) -> None:
        index = self.indexes[flow.proto]
        index.pop(flow.key, None)
        index.pop(flow.rkey, None)

    def _finish(self, flow: Flow, reason: str) -> None:
        flow.reason = reason
        if flow.streams is not None:
            flow.streams[0].finish()
            flow.streams[1].finish()

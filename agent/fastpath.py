"""The replay hot loop: counts the common packet inline, hands everything else to `slow`.

Most packets on a span port are untagged Ethernet + IPv4 + TCP/UDP belonging to a flow that
is already established and needs no reassembly (it is not inspected, or it is ciphertext
after the handshake). For those, all the pipeline does is add the packet to its flow's
counters, and doing that here, in one loop with everything in locals, is what makes the
pure-Python decode + flow lookup run at the speed of the capture reader rather than at the
speed of four function calls and a Packet object per frame.

Anything else — another link type, VLAN tags, IPv6, IP options, fragments, truncation, a new
flow, TCP SYN/FIN/RST, a flow that is reassembled or scanned, a sweep due — goes to `slow`,
which is the general decode() + FlowTable.packet() path. This loop must give exactly the
results `slow` alone would give (tests/agent/test_fastpath.py replays the corpus both ways).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from agent.flows import _LRU_TOUCH_US, STATE_ESTABLISHED, FlowTable

# From the IPv4 header at offset 14: total length, fragment field.
_len_frag = struct.Struct("!2xH2xH").unpack_from
_TCP_SYN_FIN_RST = 0x07

SlowPath = Callable[[int, int, memoryview], None]


def run_frames(frames: Iterable[tuple[int, int, memoryview]], table: FlowTable, slow: SlowPath,
               tick: Callable[[], None] | None = None) -> tuple[int, int]:
    """Process every frame; return (frames, captured bytes). `tick` runs every 16,384 frames."""
    tcp_get = table.indexes[6].get
    udp_get = table.indexes[17].get
    established = STATE_ESTABLISHED
    now, next_sweep = table.now, table.next_sweep
    packets = nbytes = 0
    for ts, linktype, data in frames:
        packets += 1
        length = len(data)
        nbytes += length
        if tick is not None and not packets & 0x3FFF:
            tick()
        if (linktype == 1 and length >= 54 and data[14] == 0x45 and data[12] == 8 and data[13] == 0
                and now <= ts < next_sweep):
            total, frag = _len_frag(data, 14)
            if not frag & 0x3FFF and 40 <= total <= length - 14:
                proto = data[23]
                # The flow key of untagged IPv4 is the frame's bytes 26..38 (see flows.flow_key).
                if proto == 6:
                    hit = tcp_get(bytes(data[26:38]))
                    # Only what slow would count without a state change or an anomaly: an
                    # established flow not being reassembled, a valid header, no SYN/FIN/RST.
                    if (hit is not None and hit[0].streams is None and hit[0].state == established
                            and not data[47] & _TCP_SYN_FIN_RST and 20 <= (data[46] >> 4) << 2 <= total - 20):
                        flow, direction = hit
                    else:
                        hit = None
                elif proto == 17:
                    hit = udp_get(bytes(data[26:38]))
                    if (hit is not None and hit[0].consumer is None and hit[0].state == established
                            and 8 <= (data[38] << 8 | data[39]) <= total - 20):
                        flow, direction = hit
                    else:
                        hit = None
                else:
                    hit = None
                if hit is not None:
                    flow.pkts[direction] += 1
                    flow.bytes[direction] += length
                    now = ts
                    if ts > flow.last:
                        flow.last = ts
                    if ts - flow.touched > _LRU_TOUCH_US:
                        flow.touched = ts
                        flow.queue.move_to_end(flow)
                    continue
        table.now = now
        slow(ts, linktype, data)
        now, next_sweep = table.now, table.next_sweep
    table.now = now
    return packets, nbytes

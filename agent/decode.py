"""Frame -> Packet: link layer, VLAN/MPLS, IPv4/IPv6 (with fragment reassembly), TCP/UDP.

What it does: finds the transport header of a captured frame at fixed offsets with
`struct.unpack_from` on the frame's memoryview and returns one slotted `Packet` whose
payload is a memoryview slice (no copy, except for reassembled IP fragments).
What it does not do: tunnels other than IP-in-IP (GRE, VXLAN, GTP are counted as
`decode.tunnel_unsupported`), checksum validation (a span port sees what the hosts see,
and offloaded checksums are routinely wrong in captures), or any flow logic.

Malformed input never raises: `decode()` returns None and counts the reason in
`stats.anomalies` under a dotted name (`decode.ipv4_bad_ihl`, ...).
"""

from __future__ import annotations

import struct
from collections import Counter

from agent.defrag import Defragmenter

# LINKTYPE_* numbers (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW_OPENBSD = 12
LINKTYPE_RAW_BSDOS = 14
LINKTYPE_PPP_HDLC = 50
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_QINQ_OLD = 0x9100
ETH_MPLS = 0x8847
ETH_MPLS_MC = 0x8848

PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6 = 41
PROTO_GRE = 47
PROTO_ICMPV6 = 58

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20

_IPV6_EXT_HEADERS = frozenset((0, 43, 60, 135, 139, 140))   # hop-by-hop, routing, dest opts, mobility, HIP, shim6
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
_IPV6_NO_NEXT = 59
_MAX_VLAN_TAGS = 3
_MAX_MPLS_LABELS = 8
_MAX_ENCAP_DEPTH = 2      # IP-in-IP nesting we follow before calling it hostile

_u16 = struct.Struct("!H").unpack_from
_u16le = struct.Struct("<H").unpack_from
_u32 = struct.Struct("!I").unpack_from
_u32le = struct.Struct("<I").unpack_from
_ipv4 = struct.Struct("!BxHHHBBxx4s4s").unpack_from     # ver_ihl, total_len, id, frag, ttl, proto, src, dst
_ports = struct.Struct("!HH").unpack_from
_tcp = struct.Struct("!HHIIBBxxxxH").unpack_from         # sport, dport, seq, ack, off, flags, urg
_ipv6 = struct.Struct("!4xHBx16s16s").unpack_from         # payload_len, next_header, src, dst


class Packet:
    """One decoded IP packet with its transport ports; the payload is a zero-copy slice."""

    __slots__ = ("ts", "vlan", "src", "dst", "proto", "sport", "dport",
                 "flags", "seq", "ack", "urg", "payload", "truncated", "length")

    def __init__(self, ts: int, vlan: int, src: bytes, dst: bytes, proto: int, sport: int, dport: int,
                 flags: int, seq: int, ack: int, urg: int, payload: memoryview, truncated: bool,
                 length: int) -> None:
        self.ts = ts                # capture time, integer microseconds since the epoch
        self.vlan = vlan            # VLAN ids packed 12 bits each, outermost first; 0 when untagged
        self.src = src              # packed address: 4 bytes (IPv4) or 16 bytes (IPv6)
        self.dst = dst
        self.proto = proto          # IP protocol number of the transport (6 TCP, 17 UDP)
        self.sport = sport
        self.dport = dport
        self.flags = flags          # TCP flags byte; 0 for UDP
        self.seq = seq
        self.ack = ack
        self.urg = urg              # TCP urgent pointer
        self.payload = payload      # transport payload (memoryview, or bytes after defragmentation)
        self.truncated = truncated  # the capture cut the payload short (snaplen): the missing bytes are a gap
        self.length = length        # captured frame length in bytes


class Decoder:
    """Decodes frames of any supported link type; owns the IP defragmenter."""

    def __init__(self, anomalies: Counter[str], defrag: Defragmenter) -> None:
        self.anomalies = anomalies
        self.defrag = defrag
        self.icmp = 0                 # ICMP/ICMPv6 packets: counted, not tracked as flows
        self.other_ip = 0             # IP packets of protocols we do not track
        self._link = {
            LINKTYPE_ETHERNET: self._ethernet,
            LINKTYPE_NULL: self._null,
            LINKTYPE_LOOP: self._loop,
            LINKTYPE_RAW: self._raw,
            LINKTYPE_RAW_OPENBSD: self._raw,
            LINKTYPE_RAW_BSDOS: self._raw,
            LINKTYPE_IPV4: self._raw,
            LINKTYPE_IPV6: self._raw,
            LINKTYPE_LINUX_SLL: self._sll,
            LINKTYPE_LINUX_SLL2: self._sll2,
            LINKTYPE_PPP: self._ppp,
            LINKTYPE_PPP_HDLC: self._ppp,
            LINKTYPE_NFLOG: self._nflog,
        }

    def decode(self, ts: int, linktype: int, data: memoryview) -> Packet | None:
        """Decode one frame; None when it carries no TCP/UDP packet we track (always counted)."""
        if linktype == LINKTYPE_ETHERNET and len(data) >= 34:
            # Fast path: untagged Ethernet + IPv4, the bulk of any span-port capture.
            if data[12] == 8 and data[13] == 0:
                return self._ipv4(ts, 0, data, 14, 0)
            return self._ethernet(ts, data)
        link = self._link.get(linktype)
        if link is None:
            self.anomalies["decode.unknown_linktype"] += 1
            return None
        return link(ts, data)

    # -- link layers -------------------------------------------------------------------------

    def _ethernet(self, ts: int, data: memoryview) -> Packet | None:
        if len(data) < 14:
            self.anomalies["decode.ethernet_short"] += 1
            return None
        return self._ethertype(ts, data, 12)

    def _ethertype(self, ts: int, data: memoryview, off: int) -> Packet | None:
        """Follow VLAN tags and MPLS labels from the ethertype field at `off` to the IP header."""
        n = len(data)
        vlan = 0
        tags = 0
        etype = (data[off] << 8) | data[off + 1]
        off += 2
        while etype == ETH_VLAN or etype == ETH_QINQ or etype == ETH_QINQ_OLD:
            if tags == _MAX_VLAN_TAGS:
                self.anomalies["decode.vlan_too_many_tags"] += 1
                return None
            if off + 4 > n:
                self.anomalies["decode.vlan_short"] += 1
                return None
            vlan = (vlan << 12) | (_u16(data, off)[0] & 0x0FFF)
            etype = _u16(data, off + 2)[0]
            off += 4
            tags += 1
        if etype == ETH_IPV4:
            return self._ipv4(ts, vlan, data, off, 0)
        if etype == ETH_IPV6:
            return self._ipv6(ts, vlan, data, off, 0)
        if etype == ETH_MPLS or etype == ETH_MPLS_MC:
            return self._mpls(ts, vlan, data, off)
        if etype == 0x0806:
            self.anomalies["decode.arp"] += 1
        else:
            self.anomalies["decode.ethertype_other"] += 1
        return None

    def _mpls(self, ts: int, vlan: int, data: memoryview, off: int) -> Packet | None:
        n = len(data)
        for _ in range(_MAX_MPLS_LABELS):
            if off + 4 > n:
                self.anomalies["decode.mpls_short"] += 1
                return None
            bottom = data[off + 2] & 0x01
            off += 4
            if bottom:
                break
        else:
            self.anomalies["decode.mpls_too_many_labels"] += 1
            return None
        if off >= n:
            self.anomalies["decode.mpls_short"] += 1
            return None
        # No next-protocol field after the label stack: the IP version nibble tells.
        version = data[off] >> 4
        if version == 4:
            return self._ipv4(ts, vlan, data, off, 0)
        if version == 6:
            return self._ipv6(ts, vlan, data, off, 0)
        self.anomalies["decode.mpls_payload_unsupported"] += 1   # pseudowire / control word
        return None

    def _sll(self, ts: int, data: memoryview) -> Packet | None:
        if len(data) < 16:
            self.anomalies["decode.sll_short"] += 1
            return None
        return self._ethertype(ts, data, 14)

    def _sll2(self, ts: int, data: memoryview) -> Packet | None:
        if len(data) < 20:
            self.anomalies["decode.sll_short"] += 1
            return None
        etype = _u16(data, 0)[0]
        if etype == ETH_IPV4:
            return self._ipv4(ts, 0, data, 20, 0)
        if etype == ETH_IPV6:
            return self._ipv6(ts, 0, data, 20, 0)
        if etype in (ETH_VLAN, ETH_QINQ, ETH_MPLS):
            self.anomalies["decode.sll2_encap_unsupported"] += 1
        else:
            self.anomalies["decode.ethertype_other"] += 1
        return None

    def _null(self, ts: int, data: memoryview) -> Packet | None:
        # BSD loopback: the address family in the *capturing host's* byte order.
        if len(data) < 4:
            self.anomalies["decode.null_short"] += 1
            return None
        family = _u32le(data, 0)[0]
        if family > 0xFFFF:
            family = _u32(data, 0)[0]
        return self._family(ts, data, family)

    def _loop(self, ts: int, data: memoryview) -> Packet | None:
        if len(data) < 4:
            self.anomalies["decode.null_short"] += 1
            return None
        return self._family(ts, data, _u32(data, 0)[0])

    def _family(self, ts: int, data: memoryview, family: int) -> Packet | None:
        if family == 2:
            return self._ipv4(ts, 0, data, 4, 0)
        if family in (10, 24, 28, 30):     # AF_INET6 differs per OS: Linux, NetBSD/OpenBSD, FreeBSD, macOS
            return self._ipv6(ts, 0, data, 4, 0)
        self.anomalies["decode.null_family_other"] += 1
        return None

    def _raw(self, ts: int, data: memoryview) -> Packet | None:
        if not len(data):
            self.anomalies["decode.raw_empty"] += 1
            return None
        version = data[0] >> 4
        if version == 4:
            return self._ipv4(ts, 0, data, 0, 0)
        if version == 6:
            return self._ipv6(ts, 0, data, 0, 0)
        self.anomalies["decode.ip_bad_version"] += 1
        return None

    def _ppp(self, ts: int, data: memoryview) -> Packet | None:
        off = 0
        if len(data) >= 2 and data[0] == 0xFF and data[1] == 0x03:
            off = 2      # HDLC address/control bytes
        if len(data) < off + 2:
            self.anomalies["decode.ppp_short"] += 1
            return None
        if data[off] & 0x01:       # protocol field compressed to one byte
            proto = data[off]
            off += 1
        else:
            proto = _u16(data, off)[0]
            off += 2
        if proto == 0x21:
            return self._ipv4(ts, 0, data, off, 0)
        if proto == 0x57:
            return self._ipv6(ts, 0, data, off, 0)
        self.anomalies["decode.ppp_proto_other"] += 1
        return None

    def _nflog(self, ts: int, data: memoryview) -> Packet | None:
        # 4-byte header (family, version, resource id) then TLVs in host order; NFULA_PAYLOAD (9) is the packet.
        n = len(data)
        if n < 4:
            self.anomalies["decode.nflog_short"] += 1
            return None
        family = data[0]
        off = 4
        while off + 4 <= n:
            tlv_len, tlv_type = _u16le(data, off)[0], _u16le(data, off + 2)[0]
            if tlv_len < 4:
                break
            if tlv_type == 9:
                payload = data[off + 4:off + tlv_len]
                if family == 2:
                    return self._ipv4(ts, 0, payload, 0, 0)
                if family == 10:
                    return self._ipv6(ts, 0, payload, 0, 0)
                break
            off += (tlv_len + 3) & ~3
        self.anomalies["decode.nflog_no_payload"] += 1
        return None

    # -- network layer -----------------------------------------------------------------------

    def _ipv4(self, ts: int, vlan: int, data: memoryview, off: int, depth: int) -> Packet | None:
        avail = len(data) - off
        if avail < 20:
            self.anomalies["decode.ipv4_short"] += 1
            return None
        ver_ihl, total, ident, frag, _ttl, proto, src, dst = _ipv4(data, off)
        hlen = (ver_ihl & 0x0F) << 2
        if ver_ihl >> 4 != 4:
            self.anomalies["decode.ip_bad_version"] += 1
            return None
        if hlen < 20 or hlen > avail:
            self.anomalies["decode.ipv4_bad_ihl"] += 1
            return None
        truncated = False
        if total < hlen:
            if total == 0:
                # TSO/GSO super-segment captured before segmentation (or BIG TCP): the stack
                # leaves the length 0 and the frame itself is the packet.
                self.anomalies["decode.ipv4_zero_total_len"] += 1
                total = avail
            else:
                self.anomalies["decode.ipv4_bad_total_len"] += 1
                return None
        if total > avail:
            truncated = True                      # snaplen cut it: the rest is a gap, not garbage
            end = off + avail
        else:
            end = off + total                     # drop Ethernet padding
        if frag & 0x3FFF:                         # MF set or offset != 0
            reassembled = self.defrag.add_v4(ts, src, dst, ident, proto, (frag & 0x1FFF) << 3,
                                             bool(frag & 0x2000), data[off + hlen:end], truncated)
            if reassembled is None:
                return None
            return self._transport(ts, vlan, src, dst, proto, memoryview(reassembled), 0, False,
                                   len(data), depth)
        return self._transport(ts, vlan, src, dst, proto, data[:end], off + hlen, truncated, len(data), depth)

    def _ipv6(self, ts: int, vlan: int, data: memoryview, off: int, depth: int) -> Packet | None:
        avail = len(data) - off
        if avail < 40:
            self.anomalies["decode.ipv6_short"] += 1
            return None
        if data[off] >> 4 != 6:
            self.anomalies["decode.ip_bad_version"] += 1
            return None
        plen, nxt, src, dst = _ipv6(data, off)
        truncated = False
        start = off + 40
        if plen == 0 and avail > 40:
            self.anomalies["decode.ipv6_jumbo_or_zero_len"] += 1
            end = off + avail
        elif 40 + plen > avail:
            truncated = True
            end = off + avail
        else:
            end = start + plen
        pos = start
        # Walk extension headers; each is (next header, length in 8-octet units - 1) except
        # the fragment header (fixed 8 bytes) and AH (length in 4-octet units - 2).
        for _ in range(16):
            if nxt in _IPV6_EXT_HEADERS:
                if pos + 2 > end:
                    self.anomalies["decode.ipv6_ext_short"] += 1
                    return None
                nxt, pos = data[pos], pos + ((data[pos + 1] + 1) << 3)
            elif nxt == _IPV6_AH:
                if pos + 2 > end:
                    self.anomalies["decode.ipv6_ext_short"] += 1
                    return None
                nxt, pos = data[pos], pos + ((data[pos + 1] + 2) << 2)
            elif nxt == _IPV6_FRAGMENT:
                if pos + 8 > end:
                    self.anomalies["decode.ipv6_ext_short"] += 1
                    return None
                frag_nxt = data[pos]
                frag_field = _u16(data, pos + 2)[0]
                ident = _u32(data, pos + 4)[0]
                offset = frag_field & 0xFFF8
                more = bool(frag_field & 1)
                if offset == 0 and not more:
                    # Atomic fragment (RFC 6946): a whole packet in a fragment header; never queue it.
                    nxt, pos = frag_nxt, pos + 8
                    continue
                reassembled = self.defrag.add_v6(ts, src, dst, ident, frag_nxt, offset, more,
                                                 data[pos + 8:end], truncated)
                if reassembled is None:
                    return None
                rnxt, payload = reassembled
                return self._after_v6_ext(ts, vlan, src, dst, rnxt, memoryview(payload), 0, False,
                                          len(data), depth)
            else:
                break
        else:
            self.anomalies["decode.ipv6_ext_too_many"] += 1
            return None
        if pos > end:
            self.anomalies["decode.ipv6_ext_short"] += 1
            return None
        return self._after_v6_ext(ts, vlan, src, dst, nxt, data[:end], pos, truncated, len(data), depth)

    def _after_v6_ext(self, ts: int, vlan: int, src: bytes, dst: bytes, nxt: int, buf: memoryview,
                      pos: int, truncated: bool, length: int, depth: int) -> Packet | None:
        # A reassembled datagram may still start with extension headers that followed the
        # fragment header (destination options, routing): skip them before the transport.
        for _ in range(16):
            if nxt in _IPV6_EXT_HEADERS:
                if pos + 2 > len(buf):
                    self.anomalies["decode.ipv6_ext_short"] += 1
                    return None
                nxt, pos = buf[pos], pos + ((buf[pos + 1] + 1) << 3)
            elif nxt == _IPV6_AH:
                if pos + 2 > len(buf):
                    self.anomalies["decode.ipv6_ext_short"] += 1
                    return None
                nxt, pos = buf[pos], pos + ((buf[pos + 1] + 2) << 2)
            else:
                break
        if nxt == _IPV6_NO_NEXT:
            self.other_ip += 1
            return None
        if pos > len(buf):
            self.anomalies["decode.ipv6_ext_short"] += 1
            return None
        return self._transport(ts, vlan, src, dst, nxt, buf, pos, truncated, length, depth)

    # -- transport layer ---------------------------------------------------------------------

    def _transport(self, ts: int, vlan: int, src: bytes, dst: bytes, proto: int, buf: memoryview,
                   off: int, truncated: bool, length: int, depth: int) -> Packet | None:
        """`buf[off:]` is the transport header and payload (already trimmed to the IP length)."""
        avail = len(buf) - off
        if proto == PROTO_TCP:
            if avail < 20:
                self.anomalies["decode.tcp_short"] += 1
                return None
            sport, dport, seq, ack, doff, flags, urg = _tcp(buf, off)
            hlen = (doff >> 4) << 2
            if hlen < 20:
                self.anomalies["decode.tcp_bad_offset"] += 1
                return None
            if hlen > avail:
                self.anomalies["decode.tcp_header_truncated" if truncated else "decode.tcp_bad_offset"] += 1
                return None
            return Packet(ts, vlan, src, dst, PROTO_TCP, sport, dport, flags, seq, ack, urg,
                          buf[off + hlen:], truncated, length)
        if proto == PROTO_UDP:
            if avail < 8:
                self.anomalies["decode.udp_short"] += 1
                return None
            sport, dport = _ports(buf, off)
            ulen = _u16(buf, off + 4)[0]
            end = len(buf)
            if 8 <= ulen <= avail:
                end = off + ulen
            elif ulen > avail and not truncated:
                self.anomalies["decode.udp_bad_len"] += 1
            return Packet(ts, vlan, src, dst, PROTO_UDP, sport, dport, 0, 0, 0, 0,
                          buf[off + 8:end], truncated, length)
        if proto == PROTO_ICMP or proto == PROTO_ICMPV6:
            self.icmp += 1
            return None
        if proto == PROTO_IPIP or proto == PROTO_IPV6:
            if depth >= _MAX_ENCAP_DEPTH:
                self.anomalies["decode.encap_too_deep"] += 1
                return None
            inner = buf[off:]
            if proto == PROTO_IPIP:
                return self._ipv4(ts, 0, inner, 0, depth + 1)
            return self._ipv6(ts, 0, inner, 0, depth + 1)
        if proto == PROTO_GRE or proto == 50:
            self.anomalies["decode.tunnel_unsupported" if proto == PROTO_GRE else "decode.esp"] += 1
            return None
        self.other_ip += 1
        return None

"""Seeded synthetic egress capture: realistic traffic mix, planted synthetic identifiers, ground truth.

    python -m benchmarks.gen_capture OUT.pcap --size 300M [--seed 1] [--truth OUT.truth.json] [--no-plant]

Writes a classic little-endian microsecond pcap (linktype 1, Ethernet) of about --size bytes
(K/M/G = 10^3/10^6/10^9, Ki/Mi/Gi = powers of 1024) and returns/writes a ground-truth summary.
The same seed and size always give a byte-identical file.

Traffic (share of captured bytes, roughly): 70 % TLS 1.3 (ClientHello with SNI, ServerHello,
ChangeCipherSpec, certificate-sized encrypted records, then application_data records of random
bytes), 20 % HTTP/1.1 on port 80 (POST uploads: form-urlencoded, JSON, multipart/form-data with CSV
parts, some chunked, some gzip, some GBK with Chinese field names; GETs; server responses), 5 % DNS
over UDP (queries and answers for the same host names), the rest SSH (banners, KEXINIT, ECDH,
encrypted packets), ICMP echo, domestic (inside <-> inside) and inbound (outside -> inside) flows.
Every TCP flow has a 3-way handshake, exact seq/ack numbers, delayed ACKs, window-limited bursts
and a FIN teardown; IPv4/TCP/UDP/ICMP checksums are valid. A few per cent of flows are IPv6.
Packets of concurrent flows are interleaved in time from 2026-01-01T00:00:00Z.

Inside: clients in 10.0.0.0/16, 192.168.1.0/24 and fd10::/16 (ULA); internal servers in
10.0.100.0/24, 10.0.200.0/24, 172.16.5.0/24. Outside: public addresses (1/8, 8.8.8/24,
114.114.114/24, 5.9/16, cloud and CN ranges; 2a00:1450::/32-style v6). All host names are under
example.com/.net/.org, e-mail addresses at example.com/.cn/.org/.net. The people around the
planted identifiers (names, postal addresses, user names in e-mail addresses, company names)
come from Faker's zh_CN and en_US providers, seeded from --seed, so the context a classifier
sees is realistic (Chinese and Western names and addresses, with their digits: house numbers,
post codes) while nobody real is described. Faker is pinned in the `test` extra: another Faker
version may pick other names, and the capture would no longer be byte-identical.

Planted values (plant=True), synthetic but checksum-valid, only inside HTTP request bodies:
cn_resident_id (GB 11643, MOD 11-2), cn_mobile (1[3-9]x + 8 digits), payment_card (16-digit
Luhn-valid, 62xxxx UnionPay and 4xxxxx), email, cn_uscc (GB 32100, MOD 31-3), iban (ISO 13616
MOD 97-10, 12 SEPA countries, compact or printed in groups of four), cn_passport (E + 8 digits
or E + letter + 7 digits, always next to a passport hotword such as "passportNo" / 护照号码, or
as the number of an ICAO 9303 TD3 machine-readable zone with valid check digits), and the
classes of the example rule pack (`RULE_PACK`): state_secret_marking (绝密★长期, 机密★10年, ...;
counted as level + star), geodata_terms (caseless: counted case-folded) and
internal_project_code (PRJ-20xx-xxxx) in free-text remarks. Decoys that must not count:
cn_resident_id_bad_check, epoch_ms (13 digits), order_no_18, card_luhn_invalid, iban_bad_check
(wrong MOD 97 digits), passport_no_hotword (passport-shaped, no hotword), mrz_bad_check (an
MRZ line whose composite check fails). Every value and decoy is delimited by non-alphanumeric
characters in the decoded body, and no 18-character value or decoy passes a check of another
class (Luhn, GB 11643, GB 32100), so each belongs to exactly one class. Luhn-invalid card decoys
start with 4, never 62 (some real UnionPay numbers fail Luhn, so a 62 number next to a card
hotword may rightly count). Truth values are in the form a classifier counts (IBANs compact,
geodata terms case-folded, markings without their period). Outside HTTP bodies the
capture holds what real traffic holds: SSH KEXINIT name-lists such as curve25519-sha256@libssh.org
are e-mail-shaped but are not e-mail addresses and are not in the truth. The truth lists, per
flow (5-tuple, direction), the values and decoys by class (and under "rule_packs" the pack to
replay with, relative to the project root) and how each request body is wrapped
(layers, outermost first: chunked, gzip, multipart, form-urlencoded/json/csv, gbk), which values a
chunk boundary splits and which a TCP segment boundary splits. Domestic flows carry values too
(under "non_egress": an egress monitor must not report them).
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import ipaddress
import json
import math
import random
import re
import struct
import sys
import time
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from urllib.parse import quote_plus, urlencode

from faker import Faker
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.cn import ric, uscc

START_US = 1767225600 * 1_000_000            # 2026-01-01T00:00:00Z
SNAPLEN = 65535
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1)
REC = struct.Struct("<IIII")
IP4 = struct.Struct("!BBHHHBBH4s4s")
IP6 = struct.Struct("!IHBB16s16s")
TCPH = struct.Struct("!HHIIBBHHH")
TSOPT = struct.Struct("!BBBBII")
UDPH = struct.Struct("!HHHH")
ICMPH = struct.Struct("!BBHHH")

FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10
INSIDE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
GATEWAY_MAC = bytes.fromhex("020000000001")

# Target share of captured bytes per kind of flow.
KIND_SHARES = (("tls", 0.70), ("http", 0.20), ("dns", 0.05), ("ssh", 0.012),
               ("domestic", 0.02), ("inbound", 0.012), ("icmp", 0.006))
KINDS = tuple(k for k, _ in KIND_SHARES)

BUILTIN_CLASSES = ("cn_resident_id", "cn_mobile", "payment_card", "email", "cn_uscc", "iban", "cn_passport")
PACK_CLASSES = ("state_secret_marking", "geodata_terms", "internal_project_code")
VALUE_CLASSES = BUILTIN_CLASSES + PACK_CLASSES
DECOY_CLASSES = ("cn_resident_id_bad_check", "epoch_ms", "order_no_18", "card_luhn_invalid", "iban_bad_check",
                 "passport_no_hotword", "mrz_bad_check")
RULE_PACK = "deploy/rules/example-important-data.yaml"   # defines PACK_CLASSES; relative to the project root

# Outside server address pools: (IPv4 network, IPv6 network or None, RTT range ms, TTL seen).
OUTSIDE_POOLS = (
    ("1.0.0.0/8", "2606:4700::/32", (20, 60), 56),
    ("8.8.8.0/24", "2001:4860::/32", (30, 80), 116),
    ("114.114.114.0/24", None, (5, 25), 52),
    ("5.9.0.0/16", None, (80, 220), 49),
    ("23.32.0.0/11", "2a02:26f0::/32", (40, 120), 54),
    ("34.64.0.0/10", "2600:1900::/28", (100, 200), 113),
    ("52.0.0.0/10", "2600:1f00::/24", (150, 250), 232),
    ("142.250.0.0/15", "2a00:1450::/32", (40, 90), 115),
    ("151.101.0.0/16", "2a04:4e40::/32", (60, 160), 57),
    ("47.96.0.0/11", None, (8, 30), 51),
    ("120.24.0.0/14", None, (10, 35), 50),
    ("180.101.0.0/16", "240e:e9::/32", (6, 20), 53),
)
OUTSIDE_CLIENT_POOLS = ("45.33.0.0/16", "185.199.108.0/22", "36.110.0.0/16", "91.198.174.0/24",
                        "5.255.255.0/24")
RESOLVERS = (("8.8.8.8", "2001:4860:4860::8888"), ("114.114.114.114", None),
             ("1.1.1.1", "2606:4700:4700::1111"), ("8.8.4.4", "2001:4860:4860::8844"))

TLS_NAMES = ([f"cdn-{n}.example.net" for n in range(1, 25)]
             + [f"api-{n}.example.org" for n in range(1, 11)]
             + [f"static-{n}.example.com" for n in range(1, 7)]
             + [f"telemetry-{n}.example.com" for n in range(1, 5)]
             + [f"img-{n}.example.net" for n in range(1, 7)])
HTTP_NAMES = ([f"upload-{n}.example.com" for n in range(1, 9)]
              + [f"forms-{n}.example.org" for n in range(1, 5)]
              + [f"collect-{n}.example.net" for n in range(1, 4)])
SSH_NAMES = [f"git-{n}.example.org" for n in range(1, 5)]
INTERNAL_NAMES = ("wiki.corp.example.com", "git.corp.example.com", "hr.corp.example.com",
                  "crm.corp.example.com")

RIC_AREAS = ("110101", "110105", "110108", "310104", "440106", "440305", "330106", "320102",
             "510107", "420106", "610113", "370202", "350203", "120101", "210102", "410105")
MOBILE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151",
                   "152", "155", "156", "157", "158", "159", "166", "176", "177", "178", "180",
                   "181", "182", "183", "185", "186", "187", "188", "189", "191", "198", "199")
UNIONPAY_BINS = ("622202", "622848", "621700", "625807", "622588", "623668")
EMAIL_DOMAINS = ("example.com", "example.cn", "example.org", "example.net")
# BBAN layouts (n digits, a upper-case letters, c either) of SEPA countries whose IBAN has no
# national check digit that python-stdnum would also verify.
IBAN_LAYOUTS = {"DE": "18n", "GB": "4a14n", "FR": "10n11c2n", "NL": "4a10n", "IT": "1a10n12c", "AT": "16n",
                "CH": "5n12c", "PL": "24n", "SE": "20n", "IE": "4a14n", "LU": "3n13c", "PT": "21n"}
PASSPORT_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"          # E + letter + 7 digits: no I, no O
MARKINGS = ("绝密★长期", "机密★10年", "秘密★6个月", "机密☆5年", "秘密*1年", "绝密★20年")
GEO_TERMS = ("高精度地图", "测绘成果", "地理坐标数据", "HD map tiles", "hd map tiles", "HD Map Tiles")
ZH_REMARKS = ("附件为{geo}，请查收。", "{marking}：{geo}，项目 {code}。", "项目 {code} 的{geo}已更新，文件密级 {marking}。",
              "请勿外传（{marking}）。", "关联项目：{code}")
EN_REMARKS = ("Attached: {geo} for project {code}.", "Project {code} deliverables.", "{geo} refresh, see {code}",
              "Classification {marking}; contains {geo}.")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "python-requests/2.31.0", "okhttp/4.12.0", "curl/8.5.0",
)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ITEM_WORDS = ("widget", "bolt", "cable", "panel", "sensor", "filter", "valve", "bracket", "lamp")

# (body kind, gzip, chunked): the first HTTP uploads cycle through these so that even a small
# capture holds every wrapping; later ones are random.
HTTP_COMBOS = (("form", False, False), ("json", False, True), ("json_gbk", False, False),
               ("multipart", True, False), ("json", True, False), ("multipart_gbk", False, True),
               ("form_gbk", True, True), ("json_gbk", False, True), ("multipart", False, True),
               ("json", True, True))


# --------------------------------------------------------------------------- packets


def _fold(total: int, udp: bool = False) -> int:
    """Internet checksum from a sum congruent (mod 0xFFFF) to the ones' complement sum."""
    rem = total % 0xFFFF
    if rem:
        return 0xFFFF - rem
    return 0xFFFF if udp else 0


def _data_sum(data: bytes) -> int:
    """Sum of the 16-bit words of data (zero-padded), modulo 0xFFFF: 2**16 == 1 (mod 0xFFFF)."""
    value = int.from_bytes(data, "big")
    return (value << 8) if len(data) & 1 else value


class Host:
    __slots__ = ("ip4", "ip6", "mac", "ttl", "ts", "rtt", "port", "name", "inside")

    def __init__(self, ip4: str | None, ip6: str | None, mac: bytes, ttl: int, *, ts: bool = True,
                 rtt: tuple[int, int] = (1, 3), port: int = 40000, inside: bool) -> None:
        self.ip4 = ipaddress.IPv4Address(ip4).packed if ip4 else None
        self.ip6 = ipaddress.IPv6Address(ip6).packed if ip6 else None
        self.mac = mac
        self.ttl = ttl
        self.ts = ts
        self.rtt = rtt             # round-trip range in ms as seen from the capture point
        self.port = port           # next ephemeral port
        self.name = ""
        self.inside = inside

    def next_port(self) -> int:
        port = self.port
        self.port = 32768 if port >= 60999 else port + 1
        return port


class Dir:
    """One direction of one flow: prebuilt Ethernet header and checksum constants, patched per packet."""

    __slots__ = ("eth", "v6", "src", "dst", "ttl", "proto", "ipid", "ip_const", "pseudo", "label")

    def __init__(self, a: Host, b: Host, proto: int, v6: bool, rng: random.Random) -> None:
        self.v6 = v6
        self.proto = proto
        self.ttl = a.ttl
        self.eth = b.mac + a.mac + (b"\x86\xdd" if v6 else b"\x08\x00")
        self.src = a.ip6 if v6 else a.ip4
        self.dst = b.ip6 if v6 else b.ip4
        self.ipid = rng.getrandbits(16)
        self.label = rng.getrandbits(20)
        flags = 0x4000 if proto == 6 else 0
        self.ip_const = 0x4500 + flags + (self.ttl << 8 | proto) + _data_sum(self.src) + _data_sum(self.dst)
        self.pseudo = _data_sum(self.src) + _data_sum(self.dst) + proto

    def ip(self, l4len: int) -> bytes:
        if self.v6:
            return IP6.pack(0x60000000 | self.label, l4len, self.proto, self.ttl, self.src, self.dst)
        total = 20 + l4len
        ipid = self.ipid
        self.ipid = (ipid + 1) & 0xFFFF
        csum = _fold(self.ip_const + total + ipid)
        return IP4.pack(0x45, 0, total, ipid, 0x4000 if self.proto == 6 else 0, self.ttl,
                        self.proto, csum, self.src, self.dst)

    def tcp(self, sport: int, dport: int, seq: int, ack: int, flags: int, win: int, opts: bytes,
            payload: bytes) -> bytes:
        hlen = 20 + len(opts)
        l4len = hlen + len(payload)
        hdr = TCPH.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, hlen << 2, flags, win, 0, 0) + opts
        csum = _fold(self.pseudo + l4len + int.from_bytes(hdr, "big") + _data_sum(payload))
        return b"".join((self.eth, self.ip(l4len), hdr[:16], csum.to_bytes(2, "big"), hdr[18:], payload))

    def udp(self, sport: int, dport: int, payload: bytes) -> bytes:
        l4len = 8 + len(payload)
        csum = _fold(self.pseudo + l4len + sport + dport + l4len + _data_sum(payload), udp=True)
        return b"".join((self.eth, self.ip(l4len), UDPH.pack(sport, dport, l4len, csum), payload))

    def icmp(self, itype: int, ident: int, seqno: int, payload: bytes) -> bytes:
        l4len = 8 + len(payload)
        total = (itype << 8) + ident + seqno + _data_sum(payload)
        if self.v6:
            total += self.pseudo + l4len
        return b"".join((self.eth, self.ip(l4len), ICMPH.pack(itype, 0, _fold(total), ident, seqno), payload))


class Flow:
    """Packets of one flow, in time order once finished, and what the truth says about it."""

    __slots__ = ("kind", "pkts", "n", "nbytes", "v6", "key", "entry")

    def __init__(self, kind: str, v6: bool) -> None:
        self.kind = kind
        self.pkts: list[tuple[int, int, bytes]] = []
        self.n = 0
        self.nbytes = 0
        self.v6 = v6
        self.key: dict | None = None
        self.entry: dict | None = None

    def emit(self, t: int, frame: bytes) -> None:
        self.pkts.append((t, self.n, frame))
        self.n += 1
        self.nbytes += 16 + len(frame)

    def finish(self) -> Flow:
        self.pkts.sort()
        return self


class TcpConn:
    """A TCP connection seen from a capture point next to the client (the egress gateway).

    Client packets are seen when sent, server packets one RTT after the client packet that caused
    them. The receiver ACKs every second segment and the last one; a sender keeps at most `burst`
    segments unacknowledged; advertised windows stay constant (no window updates)."""

    WIN = 2048                                   # scaled by 2**7: 256 KiB

    def __init__(self, flow: Flow, rng: random.Random, cli: Host, srv: Host, sport: int, dport: int,
                 t: int, v6: bool) -> None:
        self.flow = flow
        self.rng = rng
        self.cd = Dir(cli, srv, 6, v6, rng)
        self.sd = Dir(srv, cli, 6, v6, rng)
        self.sport, self.dport = sport, dport
        self.cseq = rng.getrandbits(32)
        self.sseq = rng.getrandbits(32)
        lo, hi = srv.rtt if srv.rtt[1] > cli.rtt[1] else cli.rtt
        self.rtt = max(150, rng.randint(lo * 1000, hi * 1000))
        self.t0 = self.t = t
        self.ts = cli.ts and srv.ts
        self.tsb = (rng.getrandbits(31), rng.getrandbits(31))
        self.mss = (1440 if v6 else 1460) - (12 if self.ts else 0)
        self.react = rng.randint(40, 400)        # client stack reaction (µs)
        self.burst = rng.choice((10, 16, 24, 32, 40))
        # µs per wire byte, client->server and server->client (10..100 / 50..500 Mbit/s)
        self.pace = (8 / rng.choice((10, 20, 50, 100)), 8 / rng.choice((50, 100, 200, 500)))
        self.frame_over = 14 + (40 if v6 else 20) + 20 + (12 if self.ts else 0)
        self.last_client = True                  # who sent the latest packet so far

    def _opts(self, client: bool, t: int) -> bytes:
        if not self.ts:
            return b""
        me, peer = (0, 1) if client else (1, 0)
        tsval = (self.tsb[me] + t // 1000) & 0xFFFFFFFF
        tsecr = (self.tsb[peer] + max(self.t0, t - self.rtt // 2) // 1000) & 0xFFFFFFFF
        return TSOPT.pack(1, 1, 8, 10, tsval, tsecr)

    def _send_pkt(self, t: int, client: bool, seq: int, ack: int, flags: int, payload: bytes = b"") -> None:
        if client:
            frame = self.cd.tcp(self.sport, self.dport, seq, ack, flags, self.WIN, self._opts(True, t), payload)
        else:
            frame = self.sd.tcp(self.dport, self.sport, seq, ack, flags, self.WIN, self._opts(False, t), payload)
        self.flow.emit(t, frame)

    def handshake(self) -> None:
        t, rtt = self.t, self.rtt
        mss = 1440 if self.cd.v6 else 1460
        if self.ts:
            copts = struct.pack("!BBHBBBBIIBBBB", 2, 4, mss, 4, 2, 8, 10, (self.tsb[0] + t // 1000) & 0xFFFFFFFF,
                                0, 1, 3, 3, 7)
            sopts = struct.pack("!BBHBBBBIIBBBB", 2, 4, mss, 4, 2, 8, 10,
                                (self.tsb[1] + (t + rtt) // 1000) & 0xFFFFFFFF,
                                (self.tsb[0] + t // 1000) & 0xFFFFFFFF, 1, 3, 3, 7)
        else:                                    # Windows-style client: no timestamps
            copts = struct.pack("!BBHBBBBBBBB", 2, 4, mss, 1, 3, 3, 8, 1, 1, 4, 2)
            sopts = struct.pack("!BBHBBBBBBBB", 2, 4, mss, 1, 1, 4, 2, 1, 3, 3, 7)
        self.flow.emit(t, self.cd.tcp(self.sport, self.dport, self.cseq, 0, SYN, 64240, copts, b""))
        self.flow.emit(t + rtt, self.sd.tcp(self.dport, self.sport, self.sseq, self.cseq + 1, SYN | ACK,
                                            65160, sopts, b""))
        self.cseq += 1
        self.sseq += 1
        self.t = t + rtt + self.react
        self._send_pkt(self.t, True, self.cseq, self.sseq, ACK)
        self.last_client = True

    def send(self, client: bool, data: bytes, think: int = 0) -> None:
        """Send data from one side; the other side ACKs. Returns when the last ACK is seen."""
        if not data:
            return
        mss, rtt = self.mss, self.rtt
        if client:
            ack_lag, release, pace = rtt, 5, self.pace[0]
            start = self.t + self.react + think
            seq0, peer = self.cseq, self.sseq
        else:
            ack_lag, release, pace = self.react, rtt, self.pace[1]
            start = self.t + think + (rtt if self.last_client else 0)
            seq0, peer = self.sseq, self.cseq
        n = (len(data) + mss - 1) // mss
        times: list[int] = []
        t = start
        burst = self.burst
        for i in range(n):
            if i:
                t += max(1, int((self.frame_over + mss) * pace))
            if i >= burst:
                j = i - burst
                k = j if (j & 1 or j == n - 1) else j + 1      # first ACK covering segment j
                t = max(t, times[k] + ack_lag + release)
            times.append(t)
        last = 0
        for i in range(n):
            off = i * mss
            seg = data[off:off + mss]
            self._send_pkt(times[i], client, seq0 + off, peer, ACK | (PSH if i == n - 1 else 0), seg)
            if i & 1 or i == n - 1:
                last = times[i] + ack_lag
                self._send_pkt(last, not client, peer, seq0 + off + len(seg), ACK)
        if client:
            self.cseq += len(data)
        else:
            self.sseq += len(data)
        self.t = last
        self.last_client = not client

    def close(self, server_first: bool = False) -> None:
        t = self.t + self.react + self.rng.randint(0, 3000)
        if server_first:
            t += self.rtt
            self._send_pkt(t, False, self.sseq, self.cseq, FIN | ACK)
            self._send_pkt(t + self.react, True, self.cseq, self.sseq + 1, FIN | ACK)
            self._send_pkt(t + self.react + self.rtt, False, self.sseq + 1, self.cseq + 1, ACK)
        else:
            self._send_pkt(t, True, self.cseq, self.sseq, FIN | ACK)
            self._send_pkt(t + self.rtt, False, self.sseq, self.cseq + 1, FIN | ACK)
            self._send_pkt(t + self.rtt + self.react, True, self.cseq + 1, self.sseq + 1, ACK)
        self.cseq += 1
        self.sseq += 1


# --------------------------------------------------------------------------- payloads


def tls_record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(body)) + body


def _ext(etype: int, body: bytes) -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def _vec16(body: bytes) -> bytes:
    return struct.pack("!H", len(body)) + body


def client_hello(rng: random.Random, sni: str) -> bytes:
    name = sni.encode()
    suites = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
              0xC014, 0x009C, 0x009D, 0x002F, 0x0035)
    exts = [
        _ext(0, _vec16(b"\x00" + _vec16(name))),
        _ext(23, b""),
        _ext(0xFF01, b"\x00"),
        _ext(10, _vec16(struct.pack("!HHH", 0x001D, 0x0017, 0x0018))),
        _ext(11, b"\x01\x00"),
        _ext(35, b""),
        _ext(16, _vec16(b"\x02h2\x08http/1.1")),
        _ext(5, b"\x01\x00\x00\x00\x00"),
        _ext(13, _vec16(struct.pack("!8H", 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601))),
        _ext(18, b""),
        _ext(51, _vec16(struct.pack("!HH", 0x001D, 32) + rng.randbytes(32))),
        _ext(45, b"\x01\x01"),
        _ext(43, b"\x04\x03\x04\x03\x03"),
        _ext(27, b"\x02\x00\x02"),
    ]
    head = (b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32)
            + _vec16(struct.pack(f"!{len(suites)}H", *suites)) + b"\x01\x00")
    size = len(head) + 2 + sum(map(len, exts))
    if size < 508:                               # BoringSSL-style padding to a 512-byte body
        exts.append(_ext(21, bytes(508 - size - 4 if 508 - size >= 4 else 0)))
    body = head + _vec16(b"".join(exts))
    return tls_record(22, b"\x01" + len(body).to_bytes(3, "big") + body, 0x0301)


def server_hello(rng: random.Random) -> bytes:
    exts = _ext(43, b"\x03\x04") + _ext(51, struct.pack("!HH", 0x001D, 32) + rng.randbytes(32))
    body = (b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32) + b"\x13\x01\x00"
            + _vec16(exts))
    return tls_record(22, b"\x02" + len(body).to_bytes(3, "big") + body)


CCS = tls_record(20, b"\x01")


def app_records(rng: random.Random, nbytes: int) -> bytes:
    """TLS 1.3 application_data records carrying nbytes of (random) ciphertext plaintext-equivalent."""
    out = []
    while nbytes > 0:
        size = min(16384, nbytes)
        nbytes -= size
        out.append(tls_record(23, rng.randbytes(size + 17)))
    return b"".join(out)


def ssh_packet(rng: random.Random, payload: bytes) -> bytes:
    pad = 8 - (5 + len(payload)) % 8
    if pad < 4:
        pad += 8
    return struct.pack("!IB", 1 + len(payload) + pad, pad) + payload + rng.randbytes(pad)


def _sshstr(b: bytes) -> bytes:
    return struct.pack("!I", len(b)) + b


def ssh_kexinit(rng: random.Random, client: bool) -> bytes:
    kex = (b"curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,"
           b"diffie-hellman-group14-sha256," + (b"ext-info-c" if client else b"kex-strict-s-v00@openssh.com"))
    lists = [kex, b"ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256",
             b"aes128-ctr,aes192-ctr,aes256-ctr",
             b"aes128-ctr,aes192-ctr,aes256-ctr",
             b"hmac-sha2-256-etm@openssh.com,hmac-sha2-256", b"hmac-sha2-256-etm@openssh.com,hmac-sha2-256",
             b"none,zlib@openssh.com", b"none,zlib@openssh.com", b"", b""]
    payload = b"\x14" + rng.randbytes(16) + b"".join(map(_sshstr, lists)) + b"\x00\x00\x00\x00\x00"
    return ssh_packet(rng, payload)


def ssh_encrypted(rng: random.Random, nbytes: int, mss: int) -> bytes:
    """aes128-ctr + hmac-sha2-256-etm packets: clear 4-byte length, ciphertext (multiple of 16), 32-byte MAC.

    The last packet is grown so that the final TCP segment of the write is not MAC bytes only:
    tshark 4.0 does not count the MAC when desegmenting and would call that segment malformed."""
    sizes = []
    while nbytes > 0:
        size = min(32768, max(16, (nbytes + 15) // 16 * 16))
        nbytes -= size
        sizes.append(size)
    while 0 < sum(size + 36 for size in sizes) % mss <= 32:
        if sizes[-1] < 32768:
            sizes[-1] += 16
        else:
            sizes.append(16)
    return b"".join(struct.pack("!I", size) + rng.randbytes(size + 32) for size in sizes)


def dns_name(name: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in name.split(".")) + b"\x00"


OPT_RR = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)


def dns_query(ident: int, name: str, qtype: int) -> bytes:
    return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 1) + dns_name(name) + struct.pack("!HH", qtype, 1) + OPT_RR


def dns_answer(ident: int, name: str, qtype: int, addrs: list[bytes], cname: str | None, ttl: int) -> bytes:
    question = dns_name(name) + struct.pack("!HH", qtype, 1)
    answers = []
    owner = 0xC00C
    if cname and addrs:
        target = dns_name(cname)
        answers.append(struct.pack("!HHHIH", 0xC00C, 5, 1, ttl, len(target)) + target)
        owner = 0xC000 | (12 + len(question) + 12)
    for addr in addrs:
        answers.append(struct.pack("!HHHIH", owner, qtype, 1, min(ttl, 300), len(addr)) + addr)
    authority = []
    if not addrs:                                # NODATA: SOA of the zone
        zone = ".".join(name.split(".")[-2:])
        rdata = (dns_name("ns1." + zone) + dns_name("hostmaster." + zone)
                 + struct.pack("!IIIII", 2026010101, 7200, 3600, 1209600, 300))
        authority.append(dns_name(zone) + struct.pack("!HHIH", 6, 1, 300, len(rdata)) + rdata)
    head = struct.pack("!6H", ident, 0x8180, 1, len(answers), len(authority), 1)
    return head + question + b"".join(answers) + b"".join(authority) + OPT_RR


# --------------------------------------------------------------------------- planted values


class Values:
    """Synthetic identifiers: valid ones (recorded as planted) and decoys; never the same twice."""

    def __init__(self, rng: random.Random, plant: bool, fake: tuple[Faker, Faker]) -> None:
        self.rng = rng
        self.plant = plant
        self.fake = fake                          # (zh_CN, en_US)
        self.used: set[str] = set()
        self.serial = 0

    def _unique(self, make) -> str:
        while True:
            value = make()
            if value and value not in self.used:
                self.used.add(value)
                return value

    def _digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def _ric_body(self) -> str:
        """Area code (one that existed at the birth date, as stdnum checks), birth date, sequence."""
        rng = self.rng
        born = datetime(1955, 1, 1) + timedelta(days=rng.randint(0, 18600))
        return rng.choice(RIC_AREAS) + born.strftime("%Y%m%d") + "%03d" % rng.randint(1, 999)

    def resident_id(self) -> str:
        def make() -> str:
            body = self._ric_body()
            # python-stdnum's cn.ric.calc_check_digit() wants the whole 18 characters and ignores the last.
            value = body + ric.calc_check_digit(body + "0")
            return value if ric.is_valid(value) and not luhn.is_valid(value) and not uscc.is_valid(value) else ""
        return self._unique(make)

    def resident_id_bad(self) -> str:
        def make() -> str:
            body = self._ric_body()
            good = ric.calc_check_digit(body + "0")
            value = body + self.rng.choice([c for c in "0123456789X" if c != good])
            ok = ric.is_valid(body + good) and not luhn.is_valid(value) and not uscc.is_valid(value)
            return value if ok else ""
        return self._unique(make)

    def mobile(self) -> str:
        return self._unique(lambda: self.rng.choice(MOBILE_PREFIXES) + self._digits(8))

    def card(self) -> str:
        def make() -> str:
            body = (self.rng.choice(UNIONPAY_BINS) + self._digits(9) if self.rng.random() < 0.6
                    else "4" + self._digits(14))
            return body + luhn.calc_check_digit(body)
        return self._unique(make)

    def card_bad(self) -> str:
        """4xxxxx with a wrong Luhn digit. Not 62xxxx: some real UnionPay cards fail Luhn, so a
        classifier may rightly accept a 62 number next to a card hotword."""
        def make() -> str:
            body = "4" + self._digits(14)
            good = luhn.calc_check_digit(body)
            return body + self.rng.choice([c for c in "0123456789" if c != good])
        return self._unique(make)

    def email(self) -> str:
        """A Faker user name (pinyin or English) at an example domain."""
        def make() -> str:
            user = self.fake[self.rng.random() < 0.5].user_name()
            if not re.fullmatch(r"[a-z][a-z0-9._]{1,40}[a-z0-9]", user):
                return ""
            return f"{user}{self.rng.randint(1, 999)}@{self.rng.choice(EMAIL_DOMAINS)}"
        return self._unique(make)

    def _bban(self, layout: str) -> str:
        pools = {"n": "0123456789", "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "c": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
        return "".join(self.rng.choice(pools[kind]) for n, kind in re.findall(r"(\d+)([nac])", layout)
                       for _ in range(int(n)))

    def iban(self) -> str:
        def make() -> str:
            country = self.rng.choice(sorted(IBAN_LAYOUTS))
            bban = self._bban(IBAN_LAYOUTS[country])
            value = country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban
            return value if stdnum_iban.is_valid(value) else ""
        return self._unique(make)

    def iban_bad(self) -> str:
        """A valid IBAN with other check digits (02..98, as a typo would give)."""
        def make() -> str:
            good = self.iban()
            value = good[:2] + "%02d" % self.rng.randint(2, 98) + good[4:]
            return value if not stdnum_iban.is_valid(value) else ""
        return self._unique(make)

    def passport(self) -> str:
        def make() -> str:
            if self.rng.random() < 0.7:
                return "E" + self._digits(8)
            return "E" + self.rng.choice(PASSPORT_LETTERS) + self._digits(7)
        return self._unique(make)

    def mrz(self, surname: str, given: str, good: bool = True) -> tuple[str, str]:
        """ICAO 9303 TD3 lines of a PRC passport: (line 1 with the name, line 2), and the number.

        good=False: the composite check digit is wrong (the other check digits hold)."""
        number = self.passport()
        born = datetime(1955, 1, 1) + timedelta(days=self.rng.randint(0, 18600))
        expires = datetime(2027, 1, 1) + timedelta(days=self.rng.randint(0, 3600))
        name = (re.sub(r"[^A-Z]", "", surname.upper()) + "<<" + re.sub(r"[^A-Z]+", "<", given.upper())).strip("<")
        line1 = ("P<CHN" + name + "<" * 44)[:44]
        birth, expiry = born.strftime("%y%m%d"), expires.strftime("%y%m%d")
        line2 = (number + str(_mrz_check(number)) + "CHN" + birth + str(_mrz_check(birth))
                 + self.rng.choice("MF") + expiry + str(_mrz_check(expiry)) + "<" * 14 + "<")
        composite = _mrz_check(line2[0:10] + line2[13:20] + line2[21:43])
        if not good:
            composite = (composite + self.rng.randint(1, 9)) % 10
        return line1, line2 + str(composite), number

    def project_code(self) -> str:
        return self._unique(lambda: "PRJ-20%02d-%04d" % (self.rng.randint(20, 29), self.rng.randint(0, 9999)))

    def uscc(self) -> str:
        def make() -> str:
            org = self._digits(8)
            c = 11 - sum(int(d) * w for d, w in zip(org, (3, 7, 9, 10, 5, 8, 4, 2))) % 11
            org += "X" if c == 10 else "0" if c == 11 else str(c)
            body = "91" + self.rng.choice(RIC_AREAS) + org
            value = body + uscc.calc_check_digit(body)
            return "" if value.isdigit() and (luhn.is_valid(value) or ric.is_valid(value)) else value
        return self._unique(make)

    def epoch_ms(self, now_us: int) -> str:
        def make() -> str:
            value = str(now_us // 1000 - self.rng.randint(0, 86_400_000))
            return value if not luhn.is_valid(value) else ""
        return self._unique(make)

    def order_no(self) -> str:
        def make() -> str:
            value = "20260101" + self._digits(10)
            if value[-1] == ric.calc_check_digit(value) or luhn.is_valid(value) or uscc.is_valid(value):
                return ""
            return value
        return self._unique(make)

    def ref(self, prefix: str) -> str:
        """A harmless identifier: letters and at most 6 digits."""
        self.serial += 1
        return prefix + "".join(self.rng.choice(LETTERS[:26]) for _ in range(4)) + "%06d" % (self.serial % 1_000_000)


class Body:
    """Collects a request body's planted values and decoys as (class, value); `written` maps a
    value to the text that stands for it in the body when the two differ (spaced IBANs, terms)."""

    def __init__(self, vals: Values, now_us: int) -> None:
        self.vals = vals
        self.now = now_us
        self.values: list[tuple[str, str]] = []
        self.decoys: list[tuple[str, str]] = []
        self.written: dict[str, str] = {}

    def v(self, cls: str) -> str:
        vals = self.vals
        if not vals.plant:                       # masked placeholders that match no class
            return {"cn_resident_id": "110101********123X", "cn_mobile": "138****5678",
                    "payment_card": "6222 **** **** 0000", "email": "(hidden)",
                    "cn_uscc": "(hidden)", "iban": "DE** **** **** **** **** 00", "cn_passport": "E*******"}[cls]
        value = {"cn_resident_id": vals.resident_id, "cn_mobile": vals.mobile, "payment_card": vals.card,
                 "email": vals.email, "cn_uscc": vals.uscc, "iban": vals.iban, "cn_passport": vals.passport}[cls]()
        self.values.append((cls, value))
        if cls == "iban" and vals.rng.random() < 0.5:
            return self._wrote(value, stdnum_iban.format(value))      # printed in groups of four
        return value

    def mrz(self, surname: str, given: str) -> str:
        """Both MRZ lines of a passport; its number is a planted cn_passport value."""
        if not self.vals.plant:
            return "P<CHN<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<"
        line1, line2, number = self.vals.mrz(surname, given)
        self.values.append(("cn_passport", number))
        return line1 + "\n" + line2

    def remark(self, zh: bool) -> str:
        """Free text carrying rule-pack terms: a marking, a geodata term, a project code."""
        vals, rng = self.vals, self.vals.rng
        if not vals.plant:
            return "备注：无" if zh else "no remarks"
        template = rng.choice(ZH_REMARKS if zh else EN_REMARKS)
        marking, geo, code = rng.choice(MARKINGS), rng.choice(GEO_TERMS[:3] if zh else GEO_TERMS), vals.project_code()
        if "{marking}" in template:
            self.values.append(("state_secret_marking", marking[:3]))
        if "{geo}" in template:
            self.values.append(("geodata_terms", geo.casefold()))
        if "{code}" in template:
            self.values.append(("internal_project_code", code))
        return template.format(marking=marking, geo=geo, code=code)

    def _wrote(self, value: str, text: str) -> str:
        self.written[value] = text
        return text

    def d(self, cls: str) -> str | int:
        vals = self.vals
        if not vals.plant:
            return {"epoch_ms": "2026-01-01T00:00:00Z", "order_no_18": vals.ref("ORD-")}.get(cls, "(none)")
        value = {"cn_resident_id_bad_check": vals.resident_id_bad, "epoch_ms": lambda: vals.epoch_ms(self.now),
                 "order_no_18": vals.order_no, "card_luhn_invalid": vals.card_bad, "iban_bad_check": vals.iban_bad,
                 "passport_no_hotword": vals.passport}[cls]()
        self.decoys.append((cls, value))
        return int(value) if cls == "epoch_ms" else value

    def mrz_decoy(self, surname: str, given: str) -> str:
        if not self.vals.plant:
            return "P<CHN<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<"
        line1, line2, _ = self.vals.mrz(surname, given, good=False)
        self.decoys.append(("mrz_bad_check", line2))
        return line1 + "\n" + line2


# ICAO 9303 check digits (written out here so that the generator does not depend on the classifier).
_MRZ_VALUES = {**{str(i): i for i in range(10)}, **{chr(65 + i): 10 + i for i in range(26)}, "<": 0}


def _mrz_check(field: str) -> int:
    return sum(_MRZ_VALUES[c] * (7, 3, 1)[i % 3] for i, c in enumerate(field)) % 10


# --------------------------------------------------------------------------- generator


def _iso(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def _addr_text(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


class Generator:
    def __init__(self, target_bytes: int, seed: int, plant: bool) -> None:
        self.target = target_bytes
        self.seed = seed
        self.rng = random.Random(seed)
        fake_zh, fake_en = Faker("zh_CN"), Faker("en_US")
        fake_zh.seed_instance(seed * 7919 + 2)
        fake_en.seed_instance(seed * 7919 + 3)
        self.fake = (fake_zh, fake_en)
        self.vals = Values(random.Random(seed * 7919 + 1), plant, self.fake)
        self.plant = plant
        self.cap = max(12_000, target_bytes // 25)
        self.rate = min(25e6, max(100e3, target_bytes / 10))   # captured bytes per second
        self.kind_bytes = {k: 0 for k in KINDS}
        self.kind_packets = {k: 0 for k in KINDS}
        self.kind_flows = {k: 0 for k in KINDS}
        self.v6_flows = 0
        self.http_count = 0
        self.planted: list[dict] = []
        self.non_egress: list[dict] = []
        self.sni: set[str] = set()
        self._hosts()
        rng = self.rng
        must = [("tls", {}), ("tls", {"v6": True}), ("http", {}), ("http", {}), ("http", {"v6": True}),
                ("dns", {}), ("dns", {"v6": True}), ("ssh", {}), ("icmp", {}), ("domestic", {"sub": "http"}),
                ("domestic", {"sub": "dns"}), ("inbound", {"sub": "tls"}), ("inbound", {"sub": "ssh"})]
        rng.shuffle(must)
        self.must = must

    # ----------------------------------------------------------------- address plan

    def _mac(self) -> bytes:
        return b"\x02" + self.rng.randbytes(5)

    def _hosts(self) -> None:
        rng = self.rng
        self.clients: list[Host] = []
        seen: set[str] = set()
        while len(self.clients) < 256:
            if len(self.clients) < 200:
                ip = f"10.0.{rng.randint(1, 40)}.{rng.randint(10, 250)}"
            else:
                ip = f"192.168.1.{rng.randint(20, 250)}"
            if ip in seen:
                continue
            seen.add(ip)
            windows = rng.random() < 0.3
            v6 = None
            if rng.random() < 0.3:
                a, b, c, d = (int(x) for x in ip.split("."))
                v6 = f"fd10:{a}:{b}:{c}::{d:x}"
            self.clients.append(Host(ip, v6, self._mac(), 128 if windows else 64, ts=not windows,
                                     port=rng.randint(32768, 50000), inside=True))
        self.v6_clients = [h for h in self.clients if h.ip6]

        def outside(pool: tuple) -> Host:
            net4, net6, rtt, ttl = pool
            n4 = ipaddress.ip_network(net4)
            ip4 = str(n4.network_address + rng.randint(1, n4.num_addresses - 2))
            ip6 = None
            if net6:
                n6 = ipaddress.ip_network(net6)
                ip6 = str(n6.network_address + (rng.getrandbits(32) << 16) + rng.randint(1, 0xFFFF))
            return Host(ip4, ip6, GATEWAY_MAC, ttl, rtt=rtt, inside=False)

        self.servers: dict[str, Host] = {}
        self.cnames: dict[str, str] = {}
        for name in TLS_NAMES + HTTP_NAMES + SSH_NAMES:
            host = outside(rng.choice(OUTSIDE_POOLS))
            if host.ip6 and rng.random() < 0.5:
                host.ip6 = None                  # about a third of the names have AAAA records
            host.name = name
            self.servers[name] = host
            if name.startswith(("cdn-", "img-", "static-")):
                self.cnames[name] = f"edge-{rng.randint(1, 40)}.cdn.example.org"
        self.v6_names = [n for n in TLS_NAMES if self.servers[n].ip6]
        self.v6_http_names = [n for n in HTTP_NAMES if self.servers[n].ip6] or HTTP_NAMES[:1]
        if not self.servers[self.v6_http_names[0]].ip6:
            self.servers[self.v6_http_names[0]].ip6 = "2a00:1450:4001:80b::200e"
        self.resolvers = [Host(a, b, GATEWAY_MAC, 118, rtt=(4, 30), inside=False) for a, b in RESOLVERS]
        self.internal_resolver = Host("10.0.0.53", "fd10:10:0:0::35", self._mac(), 64, rtt=(0, 1), inside=True)
        self.internal_servers = [Host(ip, None, self._mac(), 64, rtt=(0, 2), inside=True)
                                 for ip in ("10.0.200.10", "10.0.200.11", "10.0.200.20", "172.16.5.10",
                                            "172.16.5.11")]
        self.dmz = [Host("10.0.100.10", None, self._mac(), 64, rtt=(0, 1), inside=True),
                    Host("10.0.100.22", None, self._mac(), 64, rtt=(0, 1), inside=True)]
        self.outside_clients = []
        for net in OUTSIDE_CLIENT_POOLS:
            n4 = ipaddress.ip_network(net)
            for _ in range(6):
                ip4 = str(n4.network_address + rng.randint(1, n4.num_addresses - 2))
                self.outside_clients.append(Host(ip4, None, GATEWAY_MAC, rng.choice((47, 50, 52, 113, 116)),
                                                 ts=rng.random() < 0.7, rtt=(30, 200),
                                                 port=rng.randint(32768, 50000), inside=False))

    def _client(self, v6: bool) -> Host:
        return self.rng.choice(self.v6_clients if v6 else self.clients)

    def _size(self, budget: int, small: float = 0.35, medium: float = 0.45) -> int:
        """Bytes for a flow: small (1-16 kB), medium (16-256 kB) or large (256 kB-3 MB), log-uniform."""
        rng = self.rng
        r = rng.random()
        if r < small:
            size = rng.randint(1_000, 16_000)
        elif r < small + medium:
            size = int(math.exp(rng.uniform(math.log(16_000), math.log(256_000))))
        else:
            size = int(math.exp(rng.uniform(math.log(256_000), math.log(3_000_000))))
        return max(500, min(size, budget))

    def _key(self, flow: Flow, proto: str, a: Host, sport: int, b: Host, dport: int, v6: bool) -> dict:
        key = {"proto": proto, "src": _addr_text(a.ip6 if v6 else a.ip4), "sport": sport,
               "dst": _addr_text(b.ip6 if v6 else b.ip4), "dport": dport}
        flow.key = key
        return key

    # ----------------------------------------------------------------- flow builders

    def tls_flow(self, t: int, budget: int, cli: Host, srv: Host, sni: str, v6: bool, kind: str,
                 dport: int = 443) -> Flow:
        rng = self.rng
        flow = Flow(kind, v6)
        sport = cli.next_port()
        self._key(flow, "tcp", cli, sport, srv, dport, v6)
        conn = TcpConn(flow, rng, cli, srv, sport, dport, t, v6)
        conn.handshake()
        conn.send(True, client_hello(rng, sni))
        cert = rng.randint(2500, 5200)
        conn.send(False, server_hello(rng) + CCS + app_records(rng, cert), think=rng.randint(200, 3000))
        self.sni.add(sni)
        total = max(0, self._size(budget) - 9000)
        upload = rng.random() < 0.4
        up = int(total * (rng.uniform(0.7, 0.98) if upload else rng.uniform(0.02, 0.2)))
        down = total - up
        rounds = rng.randint(1, 4)
        first = True
        for r in range(rounds):
            u = max(200, up // rounds)
            d = max(300, down // rounds)
            data = (CCS + tls_record(23, rng.randbytes(53)) if first else b"") + app_records(rng, u)
            conn.send(True, data, think=rng.randint(100, 20_000))
            conn.send(False, app_records(rng, d), think=rng.randint(500, 30_000))
            first = False
        if rng.random() < 0.5:
            conn.send(True, tls_record(23, rng.randbytes(19)), think=rng.randint(1000, 50_000))
        conn.close(server_first=rng.random() < 0.2)
        return flow.finish()

    def ssh_flow(self, t: int, budget: int, cli: Host, srv: Host, v6: bool, kind: str) -> Flow:
        rng = self.rng
        flow = Flow(kind, v6)
        sport = cli.next_port()
        self._key(flow, "tcp", cli, sport, srv, 22, v6)
        conn = TcpConn(flow, rng, cli, srv, sport, 22, t, v6)
        conn.handshake()
        conn.send(False, b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\r\n", think=rng.randint(1000, 5000))
        conn.send(True, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
        conn.send(True, ssh_kexinit(rng, True))
        conn.send(False, ssh_kexinit(rng, False), think=200)
        conn.send(True, ssh_packet(rng, b"\x1e" + _sshstr(rng.randbytes(32))))
        hostkey = _sshstr(b"ssh-ed25519") + _sshstr(rng.randbytes(32))
        sig = _sshstr(b"ssh-ed25519") + _sshstr(rng.randbytes(64))
        reply = ssh_packet(rng, b"\x1f" + _sshstr(hostkey) + _sshstr(rng.randbytes(32)) + _sshstr(sig))
        conn.send(False, reply + ssh_packet(rng, b"\x15"), think=1500)
        conn.send(True, ssh_packet(rng, b"\x15") + ssh_encrypted(rng, 32, conn.mss))
        conn.send(False, ssh_encrypted(rng, 32, conn.mss), think=300)
        conn.send(True, ssh_encrypted(rng, rng.choice((96, 368, 432)), conn.mss))
        conn.send(False, ssh_encrypted(rng, 48, conn.mss), think=2000)
        payload = max(0, self._size(budget) - 5000)
        if kind == "inbound":
            payload //= 8                        # an interactive session, not a bulk push
        sent = 0
        while sent < payload:
            chunk = min(payload - sent, rng.randint(8_000, 200_000))
            conn.send(True, ssh_encrypted(rng, chunk, conn.mss), think=rng.randint(200, 50_000))
            conn.send(False, ssh_encrypted(rng, 32, conn.mss), think=200)
            sent += chunk
        conn.close()
        return flow.finish()

    def dns_flow(self, t: int, cli: Host, resolver: Host, name: str, v6: bool, kind: str) -> Flow:
        rng = self.rng
        flow = Flow(kind, v6)
        sport = cli.next_port()
        self._key(flow, "udp", cli, sport, resolver, 53, v6)
        q = Dir(cli, resolver, 17, v6, rng)
        r = Dir(resolver, cli, 17, v6, rng)
        qtypes = (1, 28) if rng.random() < 0.6 else (1,)
        server = self.servers.get(name)
        for i, qtype in enumerate(qtypes):
            ident = rng.getrandbits(16)
            tq = t + i * rng.randint(20, 200)
            flow.emit(tq, q.udp(sport, 53, dns_query(ident, name, qtype)))
            if server is not None:
                base = server.ip4 if qtype == 1 else server.ip6
            else:                                # internal name
                base = ipaddress.IPv4Address("10.0.200.%d" % (10 + INTERNAL_NAMES.index(name))).packed \
                    if qtype == 1 else None
            addrs = []
            if base:
                count = rng.choice((1, 1, 2, 4)) if name in self.cnames else 1
                for k in range(count):
                    addrs.append(base[:-1] + bytes(((base[-1] + k) % 254 + 1,)) if k else base)
            rtt = rng.randint(resolver.rtt[0] * 1000, resolver.rtt[1] * 1000 + 500)
            flow.emit(tq + rtt, r.udp(53, sport, dns_answer(ident, name, qtype, addrs, self.cnames.get(name),
                                                            rng.choice((60, 300, 600, 3600)))))
        return flow.finish()

    def icmp_flow(self, t: int, cli: Host, dst: Host, v6: bool) -> Flow:
        rng = self.rng
        flow = Flow("icmp", v6)
        self._key(flow, "icmpv6" if v6 else "icmp", cli, 0, dst, 0, v6)
        proto = 58 if v6 else 1
        q = Dir(cli, dst, proto, v6, rng)
        r = Dir(dst, cli, proto, v6, rng)
        ident = rng.getrandbits(16)
        rtt = rng.randint(dst.rtt[0] * 1000, dst.rtt[1] * 1000)
        for seqno in range(1, rng.randint(3, 5)):
            ts = t + (seqno - 1) * 1_000_000 + rng.randint(0, 200)
            payload = struct.pack("<QQ", ts // 1_000_000, ts % 1_000_000) + bytes(range(0x10, 0x38))
            flow.emit(ts, q.icmp(128 if v6 else 8, ident, seqno, payload))
            flow.emit(ts + rtt + rng.randint(0, 400), r.icmp(129 if v6 else 0, ident, seqno, payload))
        return flow.finish()

    # ----------------------------------------------------------------- HTTP

    def _filler_text(self, nbytes: int) -> bytes:
        rng = self.rng
        out, size = [], 0
        while size < nbytes:
            line = "function %s%d(a,b){return a*%d+b.%s(%d);}\n" % (
                rng.choice(ITEM_WORDS), rng.randint(1, 999), rng.randint(2, 99), rng.choice(ITEM_WORDS),
                rng.randint(0, 9))
            out.append(line)
            size += len(line)
        return "".join(out).encode()

    def _inventory_csv(self, nbytes: int) -> bytes:
        rng = self.rng
        out, size = ["sku,item,qty,unit_price,updated_at\r\n"], 0
        while size < nbytes:
            line = "SKU-%05d,%s %s,%d,%d.%02d,2026-01-01T%02d:%02d:%02dZ\r\n" % (
                rng.randint(0, 99999), rng.choice(ITEM_WORDS), rng.choice(ITEM_WORDS), rng.randint(1, 500),
                rng.randint(1, 9999), rng.randint(0, 99), rng.randint(0, 23), rng.randint(0, 59),
                rng.randint(0, 59))
            out.append(line)
            size += len(line)
        return "".join(out).encode()

    def _faker(self, make, gbk: bool) -> str:
        """A Faker string on one line that the body's charset can carry."""
        for _ in range(20):
            text = make().replace("\n", ", ")
            if not gbk:
                return text
            try:
                text.encode("gbk")
                return text
            except UnicodeEncodeError:
                continue
        return "-"

    def _person(self, body: Body, gbk: bool, valid: bool = True, full: bool = False, row: bool = False) -> dict:
        """A Faker person (zh_CN always in GBK bodies, else zh_CN or en_US) with planted identifiers;
        valid=False: the ID, card and IBAN (if any) fail their checksums. full: every optional field.
        row: a CSV row, where no hotword stands next to a value: no passport number."""
        rng = self.rng
        zh = gbk or rng.random() < 0.4
        fake = self.fake[0] if zh else self.fake[1]
        person = {
            "name": self._faker(fake.name, gbk),
            "id_number": body.v("cn_resident_id") if valid else body.d("cn_resident_id_bad_check"),
            "mobile": body.v("cn_mobile"),
            "email": body.v("email"),
            "address": self._faker(fake.address, gbk),
        }
        if full or rng.random() < 0.7:
            person["card"] = body.v("payment_card") if valid else body.d("card_luhn_invalid")
        if full or rng.random() < 0.25:
            person["iban"] = body.v("iban") if valid else body.d("iban_bad_check")
        if row:
            return person
        if full or rng.random() < 0.2:
            person["passport"] = body.v("cn_passport")
        if full or rng.random() < (0.1 if valid else 0.3):
            given, _, surname = self.fake[0].romanized_name().partition(" ")
            person["mrz"] = body.mrz(surname, given) if valid else body.mrz_decoy(surname, given)
        return person

    def _extra_decoy(self, body: Body, gbk: bool, camel: bool = False) -> tuple[str, str]:
        """A field holding a checksum-invalid ID, card or IBAN (a form with a typo, an old card)."""
        r = self.rng.random()
        if r < 0.4:
            return ("担保人身份证号码" if gbk else "guarantorIdNumber" if camel else "guarantor_id",
                    body.d("cn_resident_id_bad_check"))
        if r < 0.8:
            return ("原银行卡号" if gbk else "previousCard" if camel else "old_card", body.d("card_luhn_invalid"))
        return ("原收款账号" if gbk else "previousIban" if camel else "old_iban", body.d("iban_bad_check"))

    def _body(self, kind: str, body: Body, target: int, full: bool = False) -> tuple[bytes, str, list[str]]:
        """Returns (body bytes, Content-Type, layers inside any gzip/chunked). full: every optional
        field and a remark (the first requests, so that small captures hold every class)."""
        rng = self.rng
        gbk = kind.endswith("_gbk")
        charset = "gbk" if gbk else "utf-8"
        remark = full or rng.random() < 0.3
        if kind.startswith("form"):
            valid = full or rng.random() < 0.75
            p = self._person(body, gbk, valid, full)
            extra = [self._extra_decoy(body, gbk)] if valid and rng.random() < 0.5 else []
            if gbk:
                names = {"name": "姓名", "id_number": "身份证号码", "mobile": "手机号码", "email": "电子邮箱",
                         "address": "联系地址", "card": "银行卡号", "iban": "收款账号", "passport": "护照号码",
                         "mrz": "护照机读码"}
                fields = [(names[k], v) for k, v in p.items()]
                fields += extra + [("订单编号", body.d("order_no_18")), ("提交时间", body.d("epoch_ms"))]
                if remark:
                    fields.append(("备注", body.remark(True)))
                return (urlencode(fields, encoding="gbk").encode(),
                        "application/x-www-form-urlencoded; charset=GBK", ["form-urlencoded", "gbk"])
            fields = list(p.items()) + extra + [("order_no", body.d("order_no_18")), ("ts", body.d("epoch_ms")),
                                                ("agree", "on")]
            if remark:
                fields.append(("remark", body.remark(rng.random() < 0.5)))
            return urlencode(fields).encode(), "application/x-www-form-urlencoded", ["form-urlencoded"]
        if kind.startswith("json"):
            valid = full or rng.random() < 0.75
            voucher = body.d("passport_no_hotword") if full or rng.random() < 0.2 else None
            p = self._person(body, gbk, valid, full)
            company = body.v("cn_uscc") if full or rng.random() < 0.6 else None
            extra = dict([self._extra_decoy(body, gbk, camel=True)]) if valid and rng.random() < 0.5 else {}
            if gbk:
                names = {"name": "姓名", "id_number": "身份证号码", "mobile": "手机号码", "email": "电子邮箱",
                         "address": "地址", "card": "银行卡号", "iban": "收款账号", "passport": "护照号码",
                         "mrz": "护照机读码"}
                doc = {"请求编号": self.vals.ref("REQ-"), **({"优惠券码": voucher} if voucher else {}),
                       "时间戳": body.d("epoch_ms"), "订单编号": body.d("order_no_18"),
                       "客户": {**{names[k]: v for k, v in p.items()}, **extra}}
                if company:
                    doc["企业"] = {"名称": self._faker(self.fake[0].company, True), "统一社会信用代码": company}
                if remark:
                    doc["备注"] = body.remark(True)
                return (json.dumps(doc, ensure_ascii=False).encode("gbk"), "application/json; charset=GBK",
                        ["json", "gbk"])
            names = {"name": "name", "id_number": "idNumber", "mobile": "mobile", "email": "email",
                     "address": "address", "card": "bankCard", "iban": "iban", "passport": "passportNo", "mrz": "mrz"}
            doc = {"requestId": self.vals.ref("REQ-"), **({"voucherCode": voucher} if voucher else {}),
                   "timestamp": body.d("epoch_ms"), "orderNo": body.d("order_no_18"),
                   "customer": {**{names[k]: v for k, v in p.items()}, **extra},
                   "items": [{"sku": "SKU-%05d" % rng.randint(0, 99999), "qty": rng.randint(1, 9),
                              "price": rng.randint(100, 99999) / 100} for _ in range(rng.randint(1, 4))]}
            if company:
                doc["company"] = {"name": self._faker(self.fake[rng.random() < 0.5].company, False), "uscc": company}
            if remark:
                doc["remark"] = body.remark(rng.random() < 0.5)
            return json.dumps(doc).encode(), "application/json", ["json"]
        # multipart/form-data with a CSV part (UTF-8 or GBK), maybe inventory and binary parts
        boundary = "----WebKitFormBoundary" + "".join(rng.choice(LETTERS) for _ in range(16))
        if gbk:
            header = ("客户编号,姓名,身份证号码,手机号码,电子邮箱,联系地址,银行卡号,收款账号,统一社会信用代码,订单编号,"
                      "创建时间,备注\r\n")
        else:
            header = ("customer_ref,name,id_number,mobile,email,address,card_number,iban,company_uscc,order_no,"
                      "created_ms,remark\r\n")
        rows = [header]
        nrows = rng.randint(2, 10)
        bad_row = rng.randrange(nrows)           # one row that failed validation upstream
        for i in range(nrows):
            p = self._person(body, gbk, valid=i != bad_row and rng.random() < 0.9, row=True)
            company = body.v("cn_uscc") if rng.random() < 0.3 else ""
            note = body.remark(gbk or rng.random() < 0.5) if (full and i == 0) or rng.random() < 0.1 else ""
            rows.append(",".join((self.vals.ref("C"), p["name"], p["id_number"], p["mobile"], p["email"],
                                  '"%s"' % p["address"], p.get("card", ""), p.get("iban", ""), company,
                                  str(body.d("order_no_18")), str(body.d("epoch_ms")), '"%s"' % note)) + "\r\n")
        csv_bytes = "".join(rows).encode(charset)
        parts = [(b'Content-Disposition: form-data; name="batch"\r\n\r\n', self.vals.ref("B").encode()),
                 (('Content-Disposition: form-data; name="file"; filename="customers.csv"\r\n'
                   f"Content-Type: text/csv; charset={charset.upper()}\r\n\r\n").encode(), csv_bytes)]
        layers = ["multipart", "csv"] + (["gbk"] if gbk else [])
        extra = target - len(csv_bytes) - 600
        if extra > 2000:
            if rng.random() < 0.4:
                parts.append((b'Content-Disposition: form-data; name="inventory"; filename="inventory.csv"\r\n'
                              b"Content-Type: text/csv\r\n\r\n", self._inventory_csv(extra)))
            else:
                parts.append((('Content-Disposition: form-data; name="attachment"; '
                               f'filename="scan-{rng.randint(1, 9999):04d}.bin"\r\n'
                               "Content-Type: application/octet-stream\r\n\r\n").encode(), rng.randbytes(extra)))
        b = boundary.encode()
        data = b"".join(b"--" + b + b"\r\n" + head + value + b"\r\n" for head, value in parts) + b"--" + b + b"--\r\n"
        return data, f"multipart/form-data; boundary={boundary}", layers

    def _chunk(self, data: bytes, splits: list[int]) -> bytes:
        rng = self.rng
        cuts = set(splits)
        pos = 0
        while True:
            pos += rng.randint(200, 8000)
            if pos >= len(data):
                break
            cuts.add(pos)
        out, prev = [], 0
        for cut in sorted(cuts) + [len(data)]:
            if cut <= prev:
                continue
            out.append(b"%x\r\n" % (cut - prev) + data[prev:cut] + b"\r\n")
            prev = cut
        out.append(b"0\r\n\r\n")
        return b"".join(out)

    def http_request(self, host: str, t: int, target: int, mss: int, combo: tuple | None) -> tuple[bytes, dict, Body]:
        rng = self.rng
        body = Body(self.vals, t)
        if combo is None:
            kind = rng.choices(("form", "form_gbk", "json", "json_gbk", "multipart", "multipart_gbk"),
                               (15, 5, 30, 15, 25, 10))[0]
            if target > 20_000:
                kind = "multipart_gbk" if rng.random() < 0.3 else "multipart"
            gz, chunked = rng.random() < 0.25, rng.random() < 0.35
        else:
            kind, gz, chunked = combo
        data, ctype, layers = self._body(kind, body, target, full=combo is not None)
        if gz and len(data) > 262_144:
            gz = False
        path = {"form": "/form/submit", "json": "/api/v2/orders", "multipart": "/api/v1/customers/import"}[
            kind.split("_")[0]]
        charset = "gbk" if kind.endswith("_gbk") else "utf-8"
        tokens = []
        for cls, value in body.values:
            text = body.written.get(value, value)
            tokens.append((cls, value, quote_plus(text, safe="", encoding=charset).encode() if kind.startswith("form")
                           else text.encode(charset)))
        headers = [f"POST {path} HTTP/1.1", f"Host: {host}", f"User-Agent: {rng.choice(USER_AGENTS)}",
                   "Accept: application/json, */*", f"Content-Type: {ctype}"]
        if gz:
            data = gzip.compress(data, 6, mtime=0)
            headers.append("Content-Encoding: gzip")
            layers = ["gzip"] + layers
        chunk_split: list[str] = []
        if chunked:
            splits = []
            if not gz:
                for i, (cls, value, token) in enumerate(tokens):
                    if i == 0 or rng.random() < 0.5:
                        at = data.find(token)
                        if at >= 0:
                            splits.append(at + len(token) // 2)
                            chunk_split.append(value)
            data = self._chunk(data, splits)
            headers.append("Transfer-Encoding: chunked")
            layers = ["chunked"] + layers
        else:
            headers.append(f"Content-Length: {len(data)}")
        headers.append("Connection: keep-alive")
        wire = ("\r\n".join(headers) + "\r\n\r\n").encode() + data
        seg_split = []
        for cls, value, token in tokens:
            at = wire.find(token)
            if at >= 0 and at // mss != (at + len(token) - 1) // mss:
                seg_split.append(value)
        info = {"method": "POST", "path": path, "content_type": ctype, "layers": layers,
                "wire_body_bytes": len(data), "split_across_chunks": chunk_split,
                "split_across_segments": seg_split}
        return wire, info, body

    def _response(self, t: int, body: bytes, ctype: str) -> bytes:
        head = ("HTTP/1.1 200 OK\r\nServer: nginx\r\n"
                f"Date: {formatdate(t / 1e6, usegmt=True)}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
        return head.encode() + body

    def http_flow(self, t: int, budget: int, cli: Host, srv: Host, host: str, v6: bool, kind: str,
                  dport: int = 80) -> Flow:
        rng = self.rng
        flow = Flow(kind, v6)
        sport = cli.next_port()
        key = self._key(flow, "tcp", cli, sport, srv, dport, v6)
        conn = TcpConn(flow, rng, cli, srv, sport, dport, t, v6)
        conn.handshake()
        size = self._size(budget, 0.6, 0.35)
        if rng.random() < 0.25:
            js = self._filler_text(min(size // 3, rng.randint(2_000, 60_000)))
            size -= len(js)
            conn.send(True, (f"GET /static/app.js HTTP/1.1\r\nHost: {host}\r\nUser-Agent: "
                             f"{rng.choice(USER_AGENTS)}\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n").encode())
            conn.send(False, self._response(conn.t, js, "application/javascript"), think=rng.randint(500, 20_000))
        requests = []
        values: dict[str, list[str]] = {}
        decoys: dict[str, list[str]] = {}
        nreq = rng.randint(1, 3)
        for _ in range(nreq):
            combo = None
            if kind == "http" and self.http_count < len(HTTP_COMBOS):
                combo = HTTP_COMBOS[self.http_count]
            if kind == "http":
                self.http_count += 1
            wire, info, body = self.http_request(host, conn.t, max(300, size // nreq), conn.mss, combo)
            conn.send(True, wire, think=rng.randint(1000, 200_000))
            reply = ('{"code":0,"message":"ok","requestId":"%s"}' % self.vals.ref("R")).encode()
            conn.send(False, self._response(conn.t, reply, "application/json"), think=rng.randint(2000, 40_000))
            info["values"] = {}
            for cls, value in body.values:
                info["values"].setdefault(cls, []).append(value)
                values.setdefault(cls, []).append(value)
            info["decoys"] = {}
            for cls, value in body.decoys:
                info["decoys"].setdefault(cls, []).append(value)
                decoys.setdefault(cls, []).append(value)
            requests.append(info)
        conn.close(server_first=rng.random() < 0.3)
        if values or decoys:
            flow.entry = {"flow": key, "direction": "egress" if kind == "http" else "domestic",
                          "kind": kind, "ip_version": 6 if v6 else 4, "host": host, "first_ts": _iso(t),
                          "values": {c: values[c] for c in VALUE_CLASSES if c in values},
                          "decoys": {c: decoys[c] for c in DECOY_CLASSES if c in decoys},
                          "requests": requests}
        return flow.finish()

    # ----------------------------------------------------------------- scheduling

    def _pick_kind(self, remaining: int) -> tuple[str, dict]:
        rng = self.rng
        if remaining < 9_000:
            return ("icmp" if rng.random() < 0.1 else "dns"), {}
        if self.must and remaining > 40_000:
            return self.must.pop()
        total = sum(self.kind_bytes.values())
        look = max(50_000, min(2_000_000, self.target // 50))
        weights = [max(0.0, share * (total + look) - self.kind_bytes[k]) for k, share in KIND_SHARES]
        if not any(weights):
            weights = [share for _, share in KIND_SHARES]
        return rng.choices(KINDS, weights)[0], {}

    def new_flow(self, t: int, remaining: int) -> Flow:
        rng = self.rng
        kind, opts = self._pick_kind(remaining)
        budget = min(self.cap, remaining)
        v6 = opts.get("v6", rng.random() < 0.04)
        if kind == "tls":
            name = rng.choice(self.v6_names if v6 else TLS_NAMES)
            flow = self.tls_flow(t, budget, self._client(v6), self.servers[name], name, v6, kind)
        elif kind == "http":
            name = rng.choice(self.v6_http_names if v6 else HTTP_NAMES)
            flow = self.http_flow(t, budget, self._client(v6), self.servers[name], name, v6, kind)
        elif kind == "dns":
            resolver = rng.choice([r for r in self.resolvers if r.ip6] if v6 else self.resolvers)
            name = rng.choice(TLS_NAMES + HTTP_NAMES + SSH_NAMES)
            flow = self.dns_flow(t, self._client(v6), resolver, name, v6, kind)
        elif kind == "ssh":
            flow = self.ssh_flow(t, budget, self._client(False), self.servers[rng.choice(SSH_NAMES)], False, kind)
        elif kind == "icmp":
            dst = self.servers[rng.choice(self.v6_names)] if v6 else rng.choice(self.resolvers)
            flow = self.icmp_flow(t, self._client(v6), dst, v6)
        elif kind == "domestic":
            sub = opts.get("sub") or rng.choices(("http", "tls", "dns"), (5, 3, 2))[0]
            cli = self._client(False)
            if sub == "dns":
                flow = self.dns_flow(t, cli, self.internal_resolver, rng.choice(INTERNAL_NAMES), False, kind)
            elif sub == "tls":
                flow = self.tls_flow(t, min(budget, 60_000), cli, rng.choice(self.internal_servers),
                                     rng.choice(INTERNAL_NAMES), False, kind)
            else:
                flow = self.http_flow(t, min(budget, 60_000), cli, rng.choice(self.internal_servers),
                                      rng.choice(INTERNAL_NAMES), False, kind, dport=8080)
        else:                                    # inbound: outside client -> DMZ server
            sub = opts.get("sub") or ("tls" if rng.random() < 0.7 else "ssh")
            cli = rng.choice(self.outside_clients)
            if sub == "tls":
                flow = self.tls_flow(t, min(budget, 100_000), cli, self.dmz[0], "portal.example.com", False, kind)
            else:
                flow = self.ssh_flow(t, min(budget, 40_000), cli, self.dmz[1], False, kind)
        self.kind_bytes[kind] += flow.nbytes
        self.kind_packets[kind] += len(flow.pkts)
        self.kind_flows[kind] += 1
        self.v6_flows += flow.v6
        if flow.entry is not None:
            (self.planted if flow.entry["direction"] == "egress" else self.non_egress).append(flow.entry)
        return flow

    def write(self, path: str) -> dict:
        rng = self.rng
        target = self.target
        produced = len(PCAP_HEADER)
        heap: list = []
        uid = 0
        start = START_US
        creating = True
        packets = 0
        first_ts = last_ts = START_US
        rec = REC.pack
        with open(path, "wb", buffering=0) as out:
            buf = [PCAP_HEADER]
            size = len(PCAP_HEADER)
            while True:
                if creating and (not heap or start <= heap[0][0]):
                    remaining = target - produced
                    if remaining < 400:
                        creating = False
                        continue
                    flow = self.new_flow(start, remaining)
                    produced += flow.nbytes
                    heapq.heappush(heap, (flow.pkts[0][0], uid, 0, flow.pkts))
                    uid += 1
                    start += max(1, int(rng.expovariate(1.0) * flow.nbytes * 1e6 / self.rate))
                    continue
                if not heap:
                    break
                ts, u, i, pkts = heap[0]
                frame = pkts[i][2]
                pkts[i] = None                   # release the frame once written
                n = len(frame)
                buf.append(rec(ts // 1_000_000, ts % 1_000_000, n, n))
                buf.append(frame)
                size += 16 + n
                packets += 1
                last_ts = ts
                i += 1
                if i < len(pkts):
                    heapq.heapreplace(heap, (pkts[i][0], u, i, pkts))
                else:
                    heapq.heappop(heap)
                if size >= 8 << 20:
                    out.write(b"".join(buf))
                    buf, size = [], 0
            out.write(b"".join(buf))
        planted_counts = {c: 0 for c in VALUE_CLASSES}
        decoy_counts = {c: 0 for c in DECOY_CLASSES}
        for entry in self.planted:
            for c, vs in entry["values"].items():
                planted_counts[c] += len(vs)
            for c, vs in entry["decoys"].items():
                decoy_counts[c] += len(vs)
        return {
            "format": "egresswatch-synthetic-truth/1",
            "generator": "benchmarks.gen_capture",
            "seed": self.seed,
            "plant": self.plant,
            "target_bytes": target,
            "file_bytes": produced,
            "linktype": 1,
            "packets": packets,
            "start": _iso(first_ts),
            "end": _iso(last_ts),
            "inside_networks": list(INSIDE_NETWORKS),
            "flows": {"total": sum(self.kind_flows.values()), "ipv6": self.v6_flows, "by_kind": self.kind_flows,
                      "by_direction": {"egress": sum(n for k, n in self.kind_flows.items()
                                                     if k not in ("domestic", "inbound")),
                                       "domestic": self.kind_flows["domestic"],
                                       "inbound": self.kind_flows["inbound"]}},
            "packets_by_kind": self.kind_packets,
            "bytes_by_kind": self.kind_bytes,
            "sni": sorted(self.sni),
            "value_classes": list(VALUE_CLASSES),
            "rule_packs": [RULE_PACK] if self.plant else [],
            "decoy_classes": list(DECOY_CLASSES),
            "planted_counts": planted_counts,
            "decoy_counts": decoy_counts,
            "planted": self.planted,
            "non_egress": self.non_egress,
        }


def write_capture(path: str, *, target_bytes: int, seed: int = 1, plant: bool = True) -> dict:
    """Write a synthetic egress capture of about target_bytes to path; return the ground truth.

    Truth: counts of flows/packets/bytes by kind, the SNIs, and under "planted" one entry per
    egress flow carrying values: {"flow": {proto, src, sport, dst, dport} (client -> server),
    "direction": "egress", "values": {class: [...]}, "decoys": {class: [...]}, "requests": [...]}.
    "non_egress" has the same for domestic flows. bytes_by_kind counts pcap record bytes."""
    if target_bytes < 20_000:
        raise ValueError("target_bytes must be at least 20000")
    gen = Generator(int(target_bytes), seed, plant)
    return gen.write(path)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?)b?\s*$", re.I)


def parse_size(text: str) -> int:
    """'300M' -> 300_000_000; '1.5G'; '200K'; '64MiB' -> 64 * 2**20; a plain number is bytes."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 300M, 200K, 1.5G, 64MiB)")
    exp = " kmg".index(m.group(2).lower() or " ")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** exp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gen_capture",
                                     description="Write a seeded synthetic egress capture (pcap) and its ground truth.")
    parser.add_argument("out", help="output pcap path")
    parser.add_argument("--size", type=parse_size, default=parse_size("300M"),
                        help="approximate file size: 300M, 200K, 1.5G, 64MiB (default 300M)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--truth", help="write the ground-truth JSON here")
    parser.add_argument("--no-plant", action="store_true", help="no planted identifiers or decoys")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    try:
        truth = write_capture(args.out, target_bytes=args.size, seed=args.seed, plant=not args.no_plant)
    except ValueError as exc:
        parser.error(str(exc))
    elapsed = time.perf_counter() - began
    if args.truth:
        with open(args.truth, "w", encoding="utf-8") as fh:
            json.dump(truth, fh, ensure_ascii=False, indent=1)
            fh.write("\n")
    kinds = ", ".join(f"{k} {n}" for k, n in truth["flows"]["by_kind"].items())
    print(f"{args.out}: {truth['file_bytes']} bytes, {truth['packets']} packets, "
          f"{truth['flows']['total']} flows ({kinds}; {truth['flows']['ipv6']} IPv6), "
          f"{sum(truth['planted_counts'].values())} planted values, {sum(truth['decoy_counts'].values())} decoys, "
          f"{truth['start']} .. {truth['end']}, {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

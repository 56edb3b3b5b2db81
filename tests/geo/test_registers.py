"""Destination registers: schema validation, matching precedence, dates, scale, and a real capture."""

from __future__ import annotations

import hashlib
import ipaddress
import random
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.capture.pcapfile import CaptureFile
from agent.decode import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN, Decoder
from agent.defrag import Defragmenter
from agent.errors import UsageError
from geo.passive_dns import PassiveDns
from geo.registers import NO_TRANSFER, Register, Transfer, load_register
from tests.streams import CORPUS, CORPUS_MISSING, PROJECT_ROOT

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str, zone: ZoneInfo = SHANGHAI) -> int:
    """Packet time in µs for a local wall-clock time."""
    moment = datetime.fromisoformat(text).replace(tzinfo=zone)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def register(tmp_path: Path, body: str, name: str = "register.yaml") -> Register:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return load_register(path)


PRECEDENCE = """\
version: 1
timezone: Asia/Shanghai
destinations:
  - name: exact-api
    hosts: [api.example.com]
    basis: certification
    valid_until: 2030-01-01
  - name: wild-example
    hosts: ["*.example.com"]
    basis: standard_contract
    filed: 2024-01-10
  - name: wild-eu-example
    hosts: ["*.eu.example.com"]
    basis: security_assessment
    approved: 2024-02-01
    valid_until: 2027-01-31
  - name: net-16
    cidrs: [203.0.0.0/16]
    basis: exemption
    reason: hr_management
  - name: net-24
    cidrs: [203.0.113.0/24, "2001:db8:1::/48"]
    basis: certification
    valid_until: 2026-06-30
  - name: net-v6-32
    cidrs: ["2001:db8::/32"]
    basis: exemption
    reason: emergency
    valid_until: 2025-03-01
  - name: denied-host
    hosts: [bad.example.com]
    deny: true
    reason: PIPL Art. 42 list
  - name: denied-net
    cidrs: [203.0.113.128/25]
    deny: true
    reason: sanctioned hosting range
"""


@pytest.fixture()
def precedence(tmp_path: Path) -> Register:
    return register(tmp_path, PRECEDENCE)


NOW = at("2025-06-01T12:00:00")


def test_exact_host_beats_wildcard_beats_cidr(precedence: Register):
    assert precedence.lookup(ip("203.0.113.5"), ("api.example.com",), NOW).entry == "exact-api"
    assert precedence.lookup(ip("203.0.113.5"), ("www.example.com",), NOW).entry == "wild-example"
    assert precedence.lookup(ip("203.0.113.5"), ("www.example.org",), NOW).entry == "net-24"
    assert precedence.lookup(ip("203.0.7.7"), (), NOW).entry == "net-16"
    # Several names: an exact match of any of them beats a wildcard match of an earlier one.
    assert precedence.lookup(ip("192.0.2.1"), ("www.example.com", "api.example.com"), NOW).entry == "exact-api"


def test_longest_wildcard_and_longest_prefix_win(precedence: Register):
    assert precedence.lookup(ip("192.0.2.1"), ("a.b.eu.example.com",), NOW).entry == "wild-eu-example"
    assert precedence.lookup(ip("192.0.2.1"), ("www.example.com", "x.eu.example.com"), NOW).entry == "wild-eu-example"
    assert precedence.lookup(ip("2001:db8:1::9"), (), NOW).entry == "net-24"
    assert precedence.lookup(ip("2001:db8:2::9"), (), NOW).entry == "net-v6-32"
    assert precedence.lookup(ip("::ffff:203.0.113.5"), (), NOW).entry == "net-24"      # IPv4-mapped


def test_wildcard_matches_subdomains_only_not_the_apex(precedence: Register):
    assert precedence.lookup(ip("192.0.2.1"), ("example.com",), NOW) == NO_TRANSFER
    assert precedence.lookup(ip("192.0.2.1"), ("deep.sub.example.com",), NOW).entry == "wild-example"
    assert precedence.lookup(ip("192.0.2.1"), ("notexample.com",), NOW) == NO_TRANSFER
    assert precedence.lookup(ip("192.0.2.1"), ("WWW.Example.COM.",), NOW).entry == "wild-example"


def test_deny_beats_everything(precedence: Register):
    denied = precedence.lookup(ip("203.0.113.200"), ("api.example.com",), NOW)
    assert denied == Transfer(None, None, "denied", "denied-net", "sanctioned hosting range")
    assert precedence.lookup(ip("192.0.2.1"), ("api.example.com", "bad.example.com"), NOW).entry == "denied-host"
    assert precedence.lookup(ip("192.0.2.1"), ("bad.example.com",), at("1999-01-01T00:00:00")).status == "denied"


def test_status_follows_the_packet_date_in_the_register_timezone(precedence: Register):
    look = precedence.lookup
    addr = ip("203.0.113.5")
    # certification valid_until 2026-06-30: covered through the end of that day in Shanghai.
    assert look(addr, (), at("2026-06-30T23:59:59.999999")).status == "covered"
    assert look(addr, (), at("2026-07-01T00:00:00")) == Transfer("certification", "2026-06-30", "expired", "net-24")
    # standard contract filed 2024-01-10, no expiry: none before that day, then covered for good.
    assert look(addr, ("www.example.com",), at("2024-01-09T23:59:59")).status == "none"
    assert look(addr, ("www.example.com",), at("2024-01-10T00:00:00")).status == "covered"
    assert look(addr, ("www.example.com",), at("2099-01-01T00:00:00")).status == "covered"
    # The same instant is 2024-01-09 in UTC but 2024-01-10 in Shanghai.
    assert look(addr, ("www.example.com",), at("2024-01-09T16:00:00", ZoneInfo("UTC"))).status == "covered"
    # security assessment, both ends
    assert look(addr, ("x.eu.example.com",), at("2024-01-31T23:00:00")).status == "none"
    assert look(addr, ("x.eu.example.com",), at("2027-02-01T00:00:00")).status == "expired"
    # exemption with an end date; exemption without one
    assert look(ip("2001:db8:9::1"), (), at("2025-03-02T00:00:00")) == \
        Transfer("exemption", "2025-03-01", "expired", "net-v6-32", "emergency")
    assert look(ip("203.0.9.9"), (), at("1990-01-01T00:00:00")) == \
        Transfer("exemption", None, "covered", "net-16", "hr_management")


def test_cached_lookups_are_judged_at_each_packet_time(precedence: Register):
    addr, names = ip("203.0.113.5"), ["api.example.com"]
    before = precedence.lookup(addr, names, at("2029-12-31T12:00:00"))
    after = precedence.lookup(addr, names, at("2030-01-02T12:00:00"))
    assert (before.status, after.status) == ("covered", "expired")
    assert precedence.lookup(addr, tuple(names), at("2029-12-31T12:00:00")) is before


def test_event_fields_and_empty_register(precedence: Register):
    assert precedence.lookup(ip("203.0.113.5"), (), NOW).event_fields() == \
        {"basis": "certification", "valid_until": "2026-06-30", "status": "covered", "entry": "net-24"}
    assert NO_TRANSFER.event_fields() == {"basis": None, "valid_until": None, "status": "none"}
    empty = Register.empty()
    assert len(empty) == 0 and empty.lookup(ip("203.0.113.5"), ("api.example.com",), NOW) == NO_TRANSFER
    assert len(register(Path(precedence.source).parent, "version: 1\n", "blank.yaml")) == 0


def test_internationalised_names_match_their_wire_form(tmp_path: Path):
    reg = register(tmp_path, "version: 1\ndestinations:\n  - name: idn\n    hosts: ['*.bücher.example']\n"
                             "    basis: certification\n    valid_until: 2030-01-01\n")
    assert reg.lookup(ip("192.0.2.1"), ("shop.xn--bcher-kva.example",), NOW).entry == "idn"


def test_the_shipped_example_loads_and_says_what_it_documents():
    reg = load_register(PROJECT_ROOT / "deploy" / "registers.example.yaml")
    assert reg.timezone == "Asia/Shanghai" and len(reg) == 5
    assert reg.lookup(ip("198.51.100.7"), ("crm.example.net",), NOW).status == "denied"
    assert reg.lookup(ip("192.0.2.1"), ("blocked.example",), NOW).status == "denied"
    assert reg.lookup(ip("192.0.2.1"), ("a.hr.example.com",), at("2024-04-20T08:00:00")).status == "covered"
    assert reg.lookup(ip("192.0.2.1"), ("a.hr.example.com",), at("2027-04-29T08:00:00")).status == "expired"
    assert reg.lookup(ip("192.0.2.1"), ("hr.example.com",), NOW).basis == "standard_contract"
    assert reg.lookup(ip("2001:db8:100::1"), (), NOW).entry == "global-crm"


ENTRY = "version: 1\ndestinations:\n  - name: e1\n"
BAD = {
    "not a mapping": ("- just\n- a list\n", "a register is a mapping"),
    "unknown top key": ("version: 1\nentries: []\n", "unknown key 'entries'"),
    "no version": ("destinations: []\n", "version must be 1"),
    "wrong version": ("version: 2\ndestinations: []\n", "version must be 1"),
    "bad timezone": ("version: 1\ntimezone: Mars/Olympus\n", "unknown timezone"),
    "destinations not a list": ("version: 1\ndestinations: {a: 1}\n", "must be a list"),
    "entry not a mapping": ("version: 1\ndestinations: [x]\n", "entry 1: each destination is a mapping"),
    "no name": ("version: 1\ndestinations:\n  - hosts: [a.example]\n", "entry 1: needs a name"),
    "no hosts or cidrs": (ENTRY + "    basis: certification\n    valid_until: 2030-01-01\n", "needs hosts or cidrs"),
    "no basis": (ENTRY + "    hosts: a.example\n", "needs basis"),
    "unknown basis": (ENTRY + "    hosts: a.example\n    basis: adequacy\n", "needs basis"),
    "missing date": (ENTRY + "    hosts: a.example\n    basis: security_assessment\n    approved: 2024-01-01\n",
                     "security_assessment needs valid_until"),
    "key of another basis": (ENTRY + "    hosts: a.example\n    basis: standard_contract\n    filed: 2024-01-01\n"
                             "    valid_until: 2026-01-01\n", "'valid_until' does not apply to standard_contract"),
    "typo in key": (ENTRY + "    hosts: a.example\n    basis: certification\n    valid_untill: 2030-01-01\n",
                    "'valid_untill' does not apply"),
    "text date": (ENTRY + "    hosts: a.example\n    basis: certification\n    valid_until: next year\n",
                  "valid_until must be a date YYYY-MM-DD"),
    "timestamp not date": (ENTRY + "    hosts: a.example\n    basis: certification\n    valid_until: 2030-01-01T10:00:00\n",
                           "valid_until must be a date"),
    "impossible date": (ENTRY + "    hosts: a.example\n    basis: certification\n    valid_until: 2030-02-30\n",
                        "not valid YAML"),
    "start after end": (ENTRY + "    hosts: a.example\n    basis: security_assessment\n    approved: 2027-01-01\n"
                        "    valid_until: 2026-01-01\n", "approved 2027-01-01 is after the end date"),
    "exemption without reason": (ENTRY + "    hosts: a.example\n    basis: exemption\n", "exemption needs reason"),
    "exemption unknown reason": (ENTRY + "    hosts: a.example\n    basis: exemption\n    reason: convenience\n",
                                 "exemption needs reason"),
    "deny false": (ENTRY + "    hosts: a.example\n    deny: false\n", "deny must be true"),
    "deny with basis": (ENTRY + "    hosts: a.example\n    deny: true\n    basis: certification\n", "has no basis"),
    "deny without reason": (ENTRY + "    hosts: a.example\n    deny: true\n", "needs a reason"),
    "deny with dates": (ENTRY + "    hosts: a.example\n    deny: true\n    reason: x\n    filed: 2024-01-01\n",
                        "'filed' does not apply to a deny entry"),
    "bad cidr": (ENTRY + "    cidrs: [203.0.113.0/33]\n    deny: true\n    reason: x\n", "bad CIDR '203.0.113.0/33'"),
    "host bits set": (ENTRY + "    cidrs: [203.0.113.5/24]\n    deny: true\n    reason: x\n", "has host bits set"),
    "wildcard in the middle": (ENTRY + "    hosts: ['a.*.example']\n    deny: true\n    reason: x\n", "is not a hostname"),
    "bare wildcard": (ENTRY + "    hosts: ['*']\n    deny: true\n    reason: x\n", "is not a hostname"),
    "url not host": (ENTRY + "    hosts: ['https://a.example/']\n    deny: true\n    reason: x\n", "is not a hostname"),
    "hosts not strings": (ENTRY + "    hosts: [1, 2]\n    deny: true\n    reason: x\n", "hosts must be a string or a list"),
    "note not text": (ENTRY + "    hosts: a.example\n    deny: true\n    reason: x\n    note: [1]\n", "note must be text"),
    "duplicate name": (ENTRY + "    hosts: a.example\n    deny: true\n    reason: x\n"
                       "  - name: e1\n    hosts: b.example\n    deny: true\n    reason: x\n",
                       "entry 2 ('e1'): the name is used by an earlier entry"),
    "duplicate host": (ENTRY + "    hosts: A.example\n    deny: true\n    reason: x\n"
                       "  - name: e2\n    hosts: a.example.\n    basis: exemption\n    reason: emergency\n",
                       "entry 2 ('e2'): a.example is already listed by entry 'e1'"),
    "duplicate cidr": (ENTRY + "    cidrs: ['2001:db8::/32']\n    deny: true\n    reason: x\n"
                       "  - name: e2\n    cidrs: ['2001:0db8::/32']\n    deny: true\n    reason: y\n",
                       "2001:db8::/32 is already listed by entry 'e1'"),
    "yaml syntax": ("version: 1\ndestinations: [\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_mistake_is_one_line_naming_the_file(tmp_path: Path, case: str):
    body, message = BAD[case]
    path = tmp_path / "reg.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_register(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_and_unreadable_files(tmp_path: Path):
    with pytest.raises(UsageError, match="destination register not found"):
        load_register(tmp_path / "absent.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"version: 1 # \xe9\n")
    with pytest.raises(UsageError, match="cannot read destination register"):
        load_register(tmp_path / "latin1.yaml")


def test_reload_returns_a_new_register_or_raises_leaving_the_old_one(tmp_path: Path):
    path = tmp_path / "reg.yaml"
    path.write_text(ENTRY + "    hosts: a.example\n    deny: true\n    reason: x\n")
    first = load_register(path)
    path.write_text(ENTRY + "    hosts: a.example\n    basis: exemption\n    reason: emergency\n")
    second = load_register(path)
    assert second is not first
    assert (first.lookup(ip("192.0.2.1"), ("a.example",), NOW).status,
            second.lookup(ip("192.0.2.1"), ("a.example",), NOW).status) == ("denied", "covered")
    path.write_text(ENTRY + "    hosts: a.example\n    basis: exemption\n")
    with pytest.raises(UsageError):
        load_register(path)
    assert second.lookup(ip("192.0.2.1"), ("a.example",), NOW).status == "covered"


def test_ten_thousand_entries_answer_like_a_linear_scan(tmp_path: Path):
    """Generated register (hosts, wildcards, IPv4/IPv6 CIDRs, some denies); every sampled
    lookup agrees with a plain scan over all entries applying the documented precedence."""
    rng = random.Random(7)
    lines = ["version: 1", "destinations:"]
    entries = []                   # (name, kind, key, network or None, deny)
    used: set[str] = set()
    for _ in range(50_000):        # duplicates are drawn again; bounded all the same
        if len(entries) == 10_000:
            break
        i = len(entries)
        kind = ("exact", "wild", "v4", "v6")[i % 4]
        net = None
        if kind == "exact":
            key = f"h{rng.randrange(5000)}.s{rng.randrange(40)}.example.com"
        elif kind == "wild":
            key = rng.choice((f"*.s{rng.randrange(40)}.example.com", f"*.t{rng.randrange(5000)}.s{rng.randrange(40)}.example.com"))
        elif kind == "v4":
            net = ipaddress.ip_network((rng.getrandbits(32), rng.choice((12, 16, 20, 24, 28))), strict=False)
        else:
            net = ipaddress.ip_network((0x20010DB8 << 96 | rng.getrandbits(40) << 56, rng.choice((40, 48, 56, 64))), strict=False)
        key = str(net) if net is not None else key
        if key in used:
            continue
        used.add(key)
        deny = rng.random() < 0.02
        field = "hosts" if net is None else "cidrs"
        rule = "deny: true\n    reason: listed" if deny else "basis: certification\n    valid_until: 2030-01-01"
        lines.append(f"  - name: e{i}\n    {field}: ['{key}']\n    {rule}")
        entries.append((f"e{i}", kind, key, net, deny))
    reg = register(tmp_path, "\n".join(lines) + "\n")
    assert len(reg) == 10_000

    def scan(addr: bytes, names: tuple[str, ...]) -> str | set[str] | None:
        address = ipaddress.ip_address(addr)
        hits = []                  # (rank, specificity, name order, entry name, deny)
        for name, kind, key, net, deny in entries:
            for order, host in enumerate(names):
                if kind == "exact" and host == key:
                    hits.append((3, 0, -order, name, deny))
                elif kind == "wild" and host.endswith(key[1:]):
                    hits.append((2, len(key), -order, name, deny))
            if net is not None and net.version == address.version and address in net:
                hits.append((1, net.prefixlen, 0, name, deny))
        denies = {h[3] for h in hits if h[4]}
        if denies:
            return denies                                   # any matching deny entry is right
        return max(hits)[3] if hits else None

    def sample_name() -> str:
        _, kind, key, _, _ = entries[rng.randrange(2) + 4 * rng.randrange(2500)]    # an exact or wildcard entry
        return key if kind == "exact" else f"x{rng.randrange(9)}.{key[2:]}"

    def sample_address() -> bytes:
        net = entries[rng.randrange(2, 4) + 4 * rng.randrange(2500)][3]
        return (int(net.network_address) + rng.randrange(net.num_addresses)).to_bytes(len(net.network_address.packed), "big")

    deadline = time.monotonic() + 120
    checked: Counter[str] = Counter()
    for n in range(300):
        if time.monotonic() > deadline:
            break
        names = tuple(sample_name() if rng.random() < 0.5 else f"www{rng.randrange(99)}.example.org"
                      for _ in range(rng.randrange(3)))
        addr = sample_address() if rng.random() < 0.5 else rng.getrandbits(32).to_bytes(4, "big")
        expected = scan(addr, names)
        got = reg.lookup(addr, names, NOW)
        if isinstance(expected, set):
            assert got.status == "denied" and got.entry in expected, (addr, names)
        else:
            assert got.entry == expected, (addr, names)
        checked[got.status] += 1
    assert checked["covered"] > 50 and checked["none"] > 10 and checked["denied"] > 0, checked


# -- a real capture: hostnames from DNS answers seen earlier on the wire ---------------------

EXAMPLE_PCAP = "mixed/pp-example.pcap"
EXAMPLE_SHA256 = "f0106bd1d7abeb80e435c3e1c5b7caf62956850bbf21495aedab0e912dbd92e9"


def test_register_matches_flows_through_passive_dns_on_a_real_capture(tmp_path: Path):
    """pp-example.pcap (2013-05-02, a browser in Israel): DNS answers precede the TCP connections;
    each new connection is judged with the names its server address was given so far."""
    path = CORPUS / EXAMPLE_PCAP
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != EXAMPLE_SHA256:
        pytest.skip(CORPUS_MISSING)
    reg = register(tmp_path, """\
version: 1
timezone: Asia/Jerusalem
destinations:
  - name: social-contract
    hosts: ["*.facebook.com"]
    basis: standard_contract
    filed: 2013-01-15
  - name: ads-denied
    hosts: ["*.doubleclick.net"]
    deny: true
    reason: no advertising recipients
  - name: cdn-range
    cidrs: [212.199.202.0/24]
    basis: certification
    valid_until: 2013-05-01
""")
    anomalies: Counter[str] = Counter()
    decoder = Decoder(anomalies, Defragmenter(anomalies))
    pdns = PassiveDns(anomalies=anomalies)
    verdicts: dict[str, set[tuple[str | None, str]]] = {}
    with CaptureFile(str(path)) as capture:
        for ts, linktype, data in capture.frames():
            pkt = decoder.decode(ts, linktype, data)
            if pkt is None:
                continue
            if pkt.proto == PROTO_UDP and pkt.sport == 53:
                pdns.observe(pkt.payload, pkt.ts)
            elif pkt.proto == PROTO_TCP and pkt.flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
                transfer = reg.lookup(pkt.dst, pdns.names(pkt.dst, pkt.ts), pkt.ts)
                verdicts.setdefault(str(ipaddress.ip_address(pkt.dst)), set()).add((transfer.entry, transfer.status))
    assert verdicts["31.13.72.49"] == {("social-contract", "covered")}            # www.facebook.com
    assert verdicts["173.194.70.157"] == {("ads-denied", "denied")}              # googleads.g.doubleclick.net
    assert verdicts["212.199.202.9"] == {("cdn-range", "expired")}               # Akamai, certificate lapsed
    assert verdicts["107.21.115.253"] == {(None, "none")}                        # px.dynamicyield.com
    assert anomalies["dns.malformed"] == 0

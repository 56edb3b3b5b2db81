"""Inside/outside membership: the answer for every address equals the ipaddress module's, also
once answers are remembered, and the memory of answers stays bounded under an address sweep."""

from __future__ import annotations

import ipaddress
import random

from geo import networks
from geo.networks import DEFAULT_INTERNAL, InternalNetworks


def test_membership_matches_ipaddress_and_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(networks, "_MAX_KNOWN", 1000)
    inside = InternalNetworks(DEFAULT_INTERNAL + ("203.0.113.128/25",))
    nets = [ipaddress.ip_network(c) for c in DEFAULT_INTERNAL + ("203.0.113.128/25",)]
    rng = random.Random(3)
    candidates = [ipaddress.ip_address(a) for a in ("10.1.2.3", "172.31.255.255", "172.32.0.0", "203.0.113.127",
                                                    "203.0.113.128", "fe80::1", "::ffff:192.168.1.1", "8.8.8.8")]
    candidates += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(3000)]
    candidates += [ipaddress.IPv6Address((0xFD << 120) | rng.getrandbits(64)) for _ in range(500)]
    for _ in range(2):                       # the second round answers from the memo (where kept)
        for address in candidates:
            mapped = getattr(address, "ipv4_mapped", None)
            expected = any((mapped or address) in net for net in nets if net.version == (mapped or address).version)
            assert (address.packed in inside) is expected, address
            assert len(inside._known) <= 1000

"""Inside/outside: which addresses belong to the monitored organisation.

`--internal` takes a comma-separated list of CIDRs; the default is every private-use range a
LAN uses: RFC 1918, carrier-grade NAT (RFC 6598), IPv6 unique-local (RFC 4193) and link-local.
A flow "crosses the boundary" when exactly one of its two ends is inside.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from agent.errors import UsageError

DEFAULT_INTERNAL = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                    "169.254.0.0/16", "fc00::/7", "fe80::/10")
_MAX_KNOWN = 65_536


def parse_cidrs(text: str | Iterable[str]) -> tuple[str, ...]:
    """Validate a comma-separated string (or list) of CIDRs; UsageError names the bad one."""
    items = [part.strip() for part in (text.split(",") if isinstance(text, str) else text)]
    items = [item for item in items if item]
    if not items:
        raise UsageError("--internal needs at least one CIDR, e.g. 10.0.0.0/8")
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise UsageError(f"bad CIDR in internal networks: {item!r}") from None
    return tuple(items)


class InternalNetworks:
    """Membership test on packed addresses (4 or 16 bytes), by prefix masks per length."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        # One set of network integers per (family, prefix length): a lookup is a handful of
        # mask-and-probe steps, independent of how many networks are configured.
        self._v4: dict[int, set[int]] = {}
        self._v6: dict[int, set[int]] = {}
        for cidr in parse_cidrs(tuple(cidrs)):
            net = ipaddress.ip_network(cidr, strict=False)
            table = self._v4 if net.version == 4 else self._v6
            table.setdefault(net.prefixlen, set()).add(int(net.network_address))
        self._v4_masks = [(((1 << 32) - 1) ^ ((1 << (32 - p)) - 1), nets) for p, nets in sorted(self._v4.items())]
        self._v6_masks = [(((1 << 128) - 1) ^ ((1 << (128 - p)) - 1), nets) for p, nets in sorted(self._v6.items())]
        # Answers by address: every flow asks about both its ends several times, and a network's
        # hosts and its destinations repeat. Bounded: emptied when full (hostile address sweeps).
        self._known: dict[bytes, bool] = {}

    def __contains__(self, packed: bytes) -> bool:
        known = self._known.get(packed)
        if known is None:
            known = self._lookup(packed)
            if len(self._known) >= _MAX_KNOWN:
                self._known.clear()
            self._known[packed] = known
        return known

    def _lookup(self, packed: bytes) -> bool:
        value = int.from_bytes(packed, "big")
        masks = self._v4_masks if len(packed) == 4 else self._v6_masks
        for mask, nets in masks:
            if value & mask in nets:
                return True
        if len(packed) == 16 and packed[:12] == b"\0" * 10 + b"\xff\xff":
            return self._lookup(packed[12:])     # IPv4-mapped IPv6
        return False

"""Build the embedded country database, geo/data/ipfire-country.mmdb, from open data.

    apt-get install tor-geoipdb        # Debian: IPFire Location data converted by Tor (CC BY-SA 4.0)
    python -m geo.build_embedded_db [--geoip /usr/share/tor/geoip] [--geoip6 /usr/share/tor/geoip6]

The source files are "first,last,CC" ranges (IPv4 as integers, IPv6 as text); "??" ranges are
left out (unknown). The output is a MaxMind DB of type "IPFire-Country" whose records have
`country.iso_code`, the shape geoip2's `country()` reads, with the export's generation date as
its build epoch, and `geo/data/ATTRIBUTION.md` records source, licence and date. CC BY-SA 4.0
requires the attribution and that the database (a derivative) stays under CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import email.utils
import ipaddress
import re
import sys
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).parent / "data" / "ipfire-country.mmdb"
ATTRIBUTION = Path(__file__).parent / "data" / "ATTRIBUTION.md"


def read_ranges(path: Path, v6: bool) -> tuple[dict[str, list[str]], str | None]:
    by_country: dict[str, list[str]] = defaultdict(list)
    generated = None
    with path.open(encoding="ascii") as fh:
        for line in fh:
            if line.startswith("#"):
                m = re.match(r"#\s*Generated:\s*(.+)", line)
                if m:
                    generated = m.group(1).strip()
                continue
            first, last, cc = line.strip().split(",")
            if cc == "??" or len(cc) != 2:
                continue
            if v6:
                lo, hi = ipaddress.IPv6Address(first), ipaddress.IPv6Address(last)
            else:
                lo, hi = ipaddress.IPv4Address(int(first)), ipaddress.IPv4Address(int(last))
            by_country[cc].extend(str(net) for net in ipaddress.summarize_address_range(lo, hi))
    return by_country, generated


def main() -> int:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geoip", default="/usr/share/tor/geoip")
    parser.add_argument("--geoip6", default="/usr/share/tor/geoip6")
    args = parser.parse_args()
    v4, generated = read_ranges(Path(args.geoip), v6=False)
    v6, _ = read_ranges(Path(args.geoip6), v6=True)
    if generated is None:
        print("build_embedded_db: no 'Generated:' date in the source header", file=sys.stderr)
        return 1
    epoch = int(email.utils.parsedate_to_datetime(generated).timestamp())
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="IPFire-Country",
                        languages=["en"], description={"en": "IPFire Location (CC BY-SA 4.0) via Debian tor-geoipdb"})
    for cc in sorted(set(v4) | set(v6)):
        writer.insert_network(IPSet(v4.get(cc, []) + v6.get(cc, [])), {"country": {"iso_code": cc}})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(OUT))
    _set_build_epoch(OUT, epoch)
    ATTRIBUTION.write_text(
        "# Embedded country database\n\n"
        f"`ipfire-country.mmdb` was built by `python -m geo.build_embedded_db` from the IPFire Location\n"
        f"database export generated {generated}, as converted by Tor's geoip-db-tool and shipped in\n"
        "Debian's `tor-geoipdb` package (/usr/share/tor/geoip and geoip6).\n\n"
        "Data: IPFire Project, https://location.ipfire.org/ — licensed CC BY-SA 4.0\n"
        "(https://creativecommons.org/licenses/by-sa/4.0/). This database is a derivative and is\n"
        "distributed under the same licence. Only the country of each network is kept; ranges the\n"
        "export marks `??` are left out (they look up as unknown).\n", encoding="utf-8")
    print(f"{OUT}: {OUT.stat().st_size:,} bytes, {len(set(v4) | set(v6))} countries, generated {generated}")
    return 0


def _set_build_epoch(path: Path, epoch: int) -> None:
    """mmdb-writer stamps the current time; the data's own date is what staleness warnings need."""

    data = bytearray(path.read_bytes())
    marker = b"\xab\xcd\xefMaxMind.com"
    meta = data.rfind(marker)
    key = b"\x4bbuild_epoch"                 # utf8 string of length 11
    at = data.find(key, meta)
    if at < 0:
        raise SystemExit("build_embedded_db: build_epoch not found in the metadata")
    pos = at + len(key)
    ctrl = data[pos]
    if ctrl >> 5 != 0 or data[pos + 1] != 2:  # extended type 7+2 = uint64
        raise SystemExit("build_embedded_db: unexpected build_epoch encoding")
    size = ctrl & 0x1F
    new = epoch.to_bytes(8, "big").lstrip(b"\0")
    if len(new) != size:
        raise SystemExit("build_embedded_db: build_epoch size changed; cannot patch in place")
    data[pos + 2:pos + 2 + size] = new
    path.write_bytes(bytes(data))


if __name__ == "__main__":
    sys.exit(main())

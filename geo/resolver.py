"""Where an address is: country (MaxMind DB country or city database) and AS (ASN database).

`GeoResolver(paths)` opens one or more MaxMind DB files (GeoIP2, GeoLite2, DB-IP or the user's
own) with geoip2 and sorts them by `metadata().database_type`, because geoip2's typed lookups
refuse the wrong type (`country()` raises TypeError on a City database). Lookups are cached
(bounded), accept IPv4, IPv6 and IPv4-mapped IPv6, and never raise for traffic: an address
that is not in the database is `unknown`, a database that turns out damaged mid-run is counted
(`geo.database_error`) and answers `unknown`.

Special-purpose addresses (IANA registries: private, loopback, link-local, multicast,
broadcast, documentation, benchmarking, shared, reserved) are never in another country:
`lookup()` reports them as `special` before any database is asked.
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import geoip2.database
import geoip2.errors
import maxminddb

from agent.errors import UsageError

UNKNOWN = "unknown"
SPECIAL = "special"
_CACHE_SIZE = 65_536


@dataclass(frozen=True, slots=True)
class Place:
    country: str                 # ISO 3166 alpha-2, or "unknown", or "special"
    asn: int | None = None
    as_org: str | None = None


class GeoResolver:
    """Country and AS lookups over the given MaxMind DB files (none: everything is unknown)."""

    def __init__(self, paths: Iterable[str] = (), anomalies: Counter[str] | None = None) -> None:
        self.anomalies = anomalies if anomalies is not None else Counter()
        self._country: list[tuple[str, geoip2.database.Reader]] = []   # (method name, reader)
        self._asn: list[geoip2.database.Reader] = []
        self.build_epochs: list[int] = []
        self.database_builds: dict[str, int] = {}   # metric label (embedded|country|asn) -> build epoch
        self.first_error: str | None = None      # the first database error met during lookups
        self._cache: OrderedDict[bytes, Place] = OrderedDict()
        for path in paths:
            self._open(path)

    def _open(self, path: str) -> None:
        try:
            reader = geoip2.database.Reader(path)
        except FileNotFoundError:
            raise UsageError(f"GeoIP database not found: {path}") from None
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise UsageError(f"{path}: not a usable MaxMind DB file ({_first_line(exc)})") from None
        kind = reader.metadata().database_type
        epoch = reader.metadata().build_epoch
        self.build_epochs.append(epoch)
        from geo import EMBEDDED_DB
        label = "embedded" if os.path.realpath(path) == os.path.realpath(EMBEDDED_DB) else \
            "asn" if "ASN" in kind else "country"
        self.database_builds[label] = max(epoch, self.database_builds.get(label, 0))
        if "ASN" in kind:
            self._asn.append(reader)
        elif "City" in kind:
            self._country.append(("city", reader))
        elif "Country" in kind or "country" in kind.lower():
            self._country.append(("country", reader))
        else:
            reader.close()
            raise UsageError(f"{path}: database type {kind!r} has neither countries nor AS numbers")

    def lookup(self, packed: bytes) -> Place:
        place = self._cache.get(packed)
        if place is not None:
            self._cache.move_to_end(packed)
            return place
        place = self._resolve(packed)
        self._cache[packed] = place
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return place

    def _resolve(self, packed: bytes) -> Place:
        address = ipaddress.ip_address(packed)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if is_special(address):
            return Place(SPECIAL)
        text = str(address)
        country = UNKNOWN
        for method, reader in self._country:
            record = self._ask(reader, method, text)
            if record is not None:
                code = record.country.iso_code or record.registered_country.iso_code
                if code:
                    country = code
                    break
        asn = as_org = None
        for reader in self._asn:
            record = self._ask(reader, "asn", text)
            if record is not None:
                asn, as_org = record.autonomous_system_number, record.autonomous_system_organization
                break
        return Place(country, asn, as_org)

    def _ask(self, reader: geoip2.database.Reader, method: str, text: str):  # noqa: ANN202 - geoip2 model types
        try:
            return getattr(reader, method)(text)
        except geoip2.errors.AddressNotFoundError:
            return None
        except (maxminddb.InvalidDatabaseError, ValueError) as exc:
            self.anomalies["geo.database_error"] += 1
            if self.first_error is None:
                self.first_error = _first_line(exc)
            return None

    def close(self) -> None:
        for _, reader in self._country:
            reader.close()
        for reader in self._asn:
            reader.close()


def geo_databases(configured: Iterable[str] = ()) -> list[str]:
    """The user's databases when given, else the embedded one (when the package has it)."""
    configured = [path for path in configured if path]
    if configured:
        return configured
    from geo import EMBEDDED_DB
    return [str(EMBEDDED_DB)] if EMBEDDED_DB.is_file() else []


def embedded_age_days(now: float | None = None) -> tuple[str, int] | None:
    """(build date, age in days) of the embedded database, or None when it is not installed."""
    import time

    from geo import EMBEDDED_DB
    if not EMBEDDED_DB.is_file():
        return None
    with maxminddb.open_database(str(EMBEDDED_DB)) as reader:
        epoch = reader.metadata().build_epoch
    built = time.strftime("%Y-%m-%d", time.gmtime(epoch))
    return built, int(((now if now is not None else time.time()) - epoch) // 86400)


def is_special(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not a place in any country: the IANA special-purpose registries, by Python's ipaddress."""
    return (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global)


def parse_ip(text: str) -> bytes:
    try:
        return ipaddress.ip_address(text.strip()).packed
    except ValueError:
        raise UsageError(f"not an IP address: {text!r}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

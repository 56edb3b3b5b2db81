"""Geo: inside networks, GeoIP lookups, jurisdictions. The embedded database lives in geo/data/."""

from __future__ import annotations

from pathlib import Path

EMBEDDED_DB = Path(__file__).parent / "data" / "ipfire-country.mmdb"
STALE_AFTER_DAYS = 90

"""Jurisdiction profiles: which countries are "home", read from data files in geo/profiles/.

A profile is a TOML file (`name`, `label`, `home`, optional `adequate` and
`adequate_if_recipient_qualifies`); `--home CC,...` replaces the home set of the chosen profile.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from agent.errors import UsageError
from geo.resolver import SPECIAL, UNKNOWN

PROFILES_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    name: str
    label: str                              # what events say for a home-country address
    home: frozenset[str]
    adequate: frozenset[str] = frozenset()
    adequate_if_qualifies: frozenset[str] = frozenset()

    def of(self, country: str) -> str:
        """The jurisdiction of a country: the profile's label at home, else the country code."""
        return self.label if country in self.home else country

    def cross_border(self, country: str) -> bool | None:
        """True abroad, False at home or for special-purpose addresses, None when unknown."""
        if country == SPECIAL or country in self.home:
            return False
        if country == UNKNOWN:
            return None
        return True

    def with_home(self, home: tuple[str, ...]) -> Jurisdiction:
        return Jurisdiction(self.name, ",".join(home), frozenset(home), self.adequate, self.adequate_if_qualifies)


def load_profile(name_or_path: str) -> Jurisdiction:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise UsageError(f"jurisdiction profile not found: {name_or_path} (built in: {known})") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read jurisdiction profile {path}: {exc}") from None
    try:
        return Jurisdiction(str(data["name"]), str(data["label"]), frozenset(data["home"]),
                            frozenset(data.get("adequate", ())),
                            frozenset(data.get("adequate_if_recipient_qualifies", ())))
    except (KeyError, TypeError) as exc:
        raise UsageError(f"jurisdiction profile {path} needs name, label and home: {exc}") from None

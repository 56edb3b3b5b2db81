"""Configuration: defaults, then one TOML file, then environment, then command line.

Everything is validated once here and passed down as frozen dataclasses; no module reads
the environment or a global. Every option, its unit and its default is documented in
`deploy/egresswatch.toml`; `egresswatch config --defaults` prints the effective values.

Environment overrides (for containers): EGRESSWATCH_CONFIG, EGRESSWATCH_INTERNAL,
EGRESSWATCH_EVE, EGRESSWATCH_GEOIP_DB, EGRESSWATCH_HOME, EGRESSWATCH_SENSITIVITY_PROFILE,
EGRESSWATCH_RULES (comma-separated rule packs).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from agent.capture.afpacket import RingOptions
from agent.errors import UsageError
from agent.exporters.syslog import SyslogOptions
from agent.exporters.webhook import WebhookOptions
from agent.flows import FlowLimits
from agent.metrics import MetricsListen, parse_listen
from classifiers.classes import SENSITIVITY_PROFILES
from classifiers.findings import FindingLimits
from geo.networks import DEFAULT_INTERNAL, parse_cidrs


@dataclass(frozen=True, slots=True)
class DefragLimits:
    max_trackers: int = 8192            # incomplete datagrams held at once
    memcap_bytes: int = 32 << 20        # bytes held across them
    timeout_us: int = 30_000_000        # an incomplete datagram is dropped after this
    max_fragments: int = 256            # fragments per datagram


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """Live capture (`egresswatch run`)."""
    interface: str = ""
    bpf: str = ""                      # tcpdump filter expression, compiled with libpcap
    promiscuous: bool = True
    user: str = "nobody"               # run as this user once the sockets are open (when started as root)
    drop_privileges: bool = True
    block_size: int = RingOptions().block_size
    block_count: int = RingOptions().block_count
    block_timeout_ms: int = RingOptions().block_timeout_ms

    @property
    def ring(self) -> RingOptions:
        return RingOptions(block_size=self.block_size, block_count=self.block_count,
                           block_timeout_ms=self.block_timeout_ms)


@dataclass(frozen=True, slots=True)
class Config:
    internal: tuple[str, ...] = DEFAULT_INTERNAL
    eve: str = "-"
    geoip_db: tuple[str, ...] = ()      # MaxMind DB files (country/city, and ASN); () = the embedded one
    home: tuple[str, ...] | None = None  # home country codes; None = the profile's (cn: CN)
    profile: str = "cn"                  # jurisdiction profile: cn, eea, or a TOML file (geo/profiles/)
    ciio: bool = False                   # critical information infrastructure operator: thresholds zero
    progress: str = "auto"              # auto (when stderr is a terminal) | always | never
    sensitivity_profile: str = "pipl-35273"   # which classes count as sensitive (see classifiers.classes)
    rule_packs: tuple[str, ...] = ()          # YAML important-data rule packs (classifiers.rulepacks)
    rule_cache: str = "auto"     # compiled rules kept here: auto = $XDG_CACHE_HOME/egresswatch, a directory, off
    workers: int = 1                          # processes; flows split by hash
    findings: FindingLimits = field(default_factory=FindingLimits)
    flows: FlowLimits = field(default_factory=FlowLimits)
    defrag: DefragLimits = field(default_factory=DefragLimits)
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    metrics: MetricsListen = field(default_factory=MetricsListen)
    metrics_textfile: str = ""           # replay: write the metrics here at the end (node-exporter textfile)
    register: str = ""                   # destination register (YAML, geo/registers.py); "" = none
    ledger: str = "auto"       # year's counts across runs: auto (live: $STATE_DIRECTORY/ledger.msgpack), a file, off
    alert_covered: bool = False          # alert also when the register covers the transfer
    passive_dns_addresses: int = 65_536  # addresses remembered from DNS answers; 0 = no passive DNS
    syslog: SyslogOptions | None = None   # RFC 5424 alert sink; None = off
    webhook: WebhookOptions | None = None  # HTTP webhook alert sink; None = off


_ENV = {
    "EGRESSWATCH_INTERNAL": "internal",
    "EGRESSWATCH_EVE": "eve",
    "EGRESSWATCH_GEOIP_DB": "geoip_db",
    "EGRESSWATCH_HOME": "home",
    "EGRESSWATCH_PROFILE": "profile",
    "EGRESSWATCH_SENSITIVITY_PROFILE": "sensitivity_profile",
    "EGRESSWATCH_RULES": "rule_packs",
    "EGRESSWATCH_RULE_CACHE": "rule_cache",
    "EGRESSWATCH_WORKERS": "workers",
    "EGRESSWATCH_INTERFACE": "interface",
    "EGRESSWATCH_BPF": "bpf",
    "EGRESSWATCH_METRICS_LISTEN": "metrics_listen",
    "EGRESSWATCH_METRICS_TEXTFILE": "metrics_textfile",
    "EGRESSWATCH_USER": "user",
    "EGRESSWATCH_REGISTER": "register",
    "EGRESSWATCH_LEDGER": "ledger",
    "EGRESSWATCH_SYSLOG": "syslog_address",
    "EGRESSWATCH_WEBHOOK": "webhook_url",
    "EGRESSWATCH_WEBHOOK_TOKEN": "webhook_token",   # environment or file only: never on a command line
}


def parse_home(text: str | list[str]) -> tuple[str, ...]:
    items = [c.strip().upper() for c in (text.split(",") if isinstance(text, str) else text) if c.strip()]
    if not items or any(len(c) != 2 or not c.isalpha() for c in items):
        raise UsageError(f"--home wants ISO 3166 two-letter country codes like CN or DE,FR; got {text!r}")
    return tuple(items)


def _limits_from(section: Mapping[str, Any], cls: type, where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in section.items():
        name = key + "_us" if key + "_us" in known else key      # durations: seconds in TOML
        if name not in known:
            raise UsageError(f"unknown option [{where}] {key} (known: {', '.join(sorted(_toml_names(cls)))})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise UsageError(f"[{where}] {key} must be a non-negative number, got {value!r}")
        values[name] = int(value * 1_000_000) if name.endswith("_us") else int(value)
    return cls(**values)


def _options_from(section: Mapping[str, Any], cls: type, where: str, hidden: tuple[str, ...] = ()) -> Any:
    """A section of strings, booleans and whole numbers, each checked against its default's type."""
    defaults = {f.name: getattr(cls(), f.name) for f in fields(cls) if f.name not in hidden}
    values = {}
    for key, value in section.items():
        if key not in defaults:
            raise UsageError(f"unknown option [{where}] {key} (known: {', '.join(sorted(defaults))})")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            value = float(value) if ok else value
        elif isinstance(default, tuple):
            kind = type(default[0]) if default else str
            ok = isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
            value = tuple(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            wanted = f"a list of {type(default[0]).__name__}" if isinstance(default, tuple) and default else \
                type(default).__name__
            raise UsageError(f"[{where}] {key} must be {wanted}, got {value!r}")
        values[key] = value
    return cls(**values)


def _toml_names(cls: type) -> list[str]:
    return [f.name.removesuffix("_us") for f in fields(cls)]


def load(path: str | None, env: Mapping[str, str], overrides: Mapping[str, Any]) -> Config:
    """Build the Config: file (if any) < environment < command-line overrides (non-None only)."""
    config = Config()
    path = path or env.get("EGRESSWATCH_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise UsageError(f"config file not found: {path}") from None
        except OSError as exc:
            raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
        config = _apply_file(config, data, path)
    for var, name in _ENV.items():
        if env.get(var):
            config = _set(config, name, env[var])
    for name, value in overrides.items():
        if value is not None:
            config = _set(config, name, value)
    return config


# TOML tables: numeric limits (durations in seconds) and typed option sets, by Config field.
_LIMIT_SECTIONS: dict[str, type] = {"flows": FlowLimits, "defrag": DefragLimits, "findings": FindingLimits}
_OPTION_SECTIONS: dict[str, type] = {"capture": CaptureOptions, "syslog": SyslogOptions, "webhook": WebhookOptions}


def _apply_file(config: Config, data: Mapping[str, Any], path: str) -> Config:
    for key, value in data.items():
        if key in _LIMIT_SECTIONS:
            config = replace(config, **{key: _limits_from(_table(value, key, path), _LIMIT_SECTIONS[key], key)})
        elif key in _OPTION_SECTIONS:
            config = replace(config, **{key: _options_from(_table(value, key, path), _OPTION_SECTIONS[key], key)})
        elif key == "metrics":
            section = dict(_table(value, key, path))
            listen = section.pop("listen", None)
            textfile = section.pop("textfile", None)
            config = replace(config, metrics=_options_from(section, MetricsListen, key, hidden=("host", "port")))
            if listen is not None:
                config = _set(config, "metrics_listen", listen)
            if textfile is not None:
                config = _set(config, "metrics_textfile", textfile)
        elif key in ("internal", "eve", "geoip_db", "home", "progress", "sensitivity_profile", "rule_packs",
                     "workers", "metrics_textfile", "register", "alert_covered", "passive_dns_addresses",
                     "profile", "ciio", "rule_cache", "ledger"):
            config = _set(config, key, value)
        else:
            raise UsageError(f"unknown option {key!r} in config file {path}")
    return config


def _table(value: Any, key: str, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"[{key}] in {path} must be a table")
    return value


def _set(config: Config, name: str, value: Any) -> Config:
    if name == "internal":
        return replace(config, internal=parse_cidrs(value))
    if name == "home":
        return replace(config, home=parse_home(value))
    if name == "progress":
        if value not in ("auto", "always", "never"):
            raise UsageError(f"progress must be auto, always or never; got {value!r}")
        return replace(config, progress=value)
    if name == "rule_packs":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and i for i in items):
            raise UsageError("rule_packs must be a list of YAML file paths")
        return replace(config, rule_packs=tuple(i.strip() for i in items))
    if name == "sensitivity_profile":
        if value not in SENSITIVITY_PROFILES:
            raise UsageError(f"sensitivity profile must be one of {', '.join(SENSITIVITY_PROFILES)}; got {value!r}")
        return replace(config, sensitivity_profile=value)
    if name == "geoip_db":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and i.strip() for i in items):
            raise UsageError("geoip_db must be a MaxMind DB path or a list of them")
        return replace(config, geoip_db=tuple(i.strip() for i in items))
    if name == "workers":
        try:
            workers = int(value)
        except (TypeError, ValueError):
            workers = 0
        if isinstance(value, bool) or not 1 <= workers <= 256:
            raise UsageError(f"workers must be a whole number from 1 to 256; got {value!r}")
        return replace(config, workers=workers)
    if name in ("interface", "bpf", "user"):
        if not isinstance(value, str):
            raise UsageError(f"{name} must be a string")
        return replace(config, capture=replace(config.capture, **{name: value}))
    if name == "promiscuous" or name == "drop_privileges":
        return replace(config, capture=replace(config.capture, **{name: bool(value)}))
    if name == "metrics_listen":
        if value in ("", "off", "none"):
            return replace(config, metrics=replace(config.metrics, port=0))
        host, port = parse_listen(value)
        return replace(config, metrics=replace(config.metrics, host=host, port=port))
    if name == "register":
        if not isinstance(value, str):
            raise UsageError("register must be a path to a YAML destination register")
        return replace(config, register=value)
    if name == "profile":
        if not isinstance(value, str) or not value:
            raise UsageError("profile must be cn, eea or a profile TOML file")
        from geo.jurisdiction import load_profile
        load_profile(value)                       # a bad profile is a usage error now, not later
        return replace(config, profile=value)
    if name == "ciio":
        if not isinstance(value, bool):
            raise UsageError(f"ciio must be true or false; got {value!r}")
        return replace(config, ciio=value)
    if name == "alert_covered":
        if not isinstance(value, bool):
            raise UsageError(f"alert_covered must be true or false; got {value!r}")
        return replace(config, alert_covered=value)
    if name == "passive_dns_addresses":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"passive_dns_addresses must be a whole number >= 0; got {value!r}")
        return replace(config, passive_dns_addresses=value)
    if name == "syslog_address":
        if not isinstance(value, str) or not value:
            raise UsageError("syslog wants HOST:PORT")
        return replace(config, syslog=replace(config.syslog or SyslogOptions(), address=value))
    if name == "syslog_transport":
        return replace(config, syslog=replace(config.syslog or SyslogOptions(), transport=value))
    if name == "webhook_url":
        if not isinstance(value, str) or not value:
            raise UsageError("webhook wants a URL")
        return replace(config, webhook=replace(config.webhook or WebhookOptions(), url=value))
    if name == "webhook_token":
        return replace(config, webhook=replace(config.webhook or WebhookOptions(), bearer_token=value))
    if name == "ledger":
        if not isinstance(value, str):
            raise UsageError(f"ledger must be auto, off or a file path; got {value!r}")
        value = value or "off"                   # "" (the first releases' default) is off
        return replace(config, ledger=value)
    if name == "rule_cache":
        if not isinstance(value, str) or not value:
            raise UsageError(f"rule_cache must be auto, off or a directory; got {value!r}")
        return replace(config, rule_cache=value)
    if name == "metrics_textfile":
        if not isinstance(value, str):
            raise UsageError("metrics_textfile must be a path")
        return replace(config, metrics_textfile=value)
    if name in ("eve",):
        if not isinstance(value, str) or not value:
            raise UsageError(f"{name} must be a path")
        return replace(config, **{name: value})
    raise UsageError(f"unknown option {name!r}")


def environment() -> Mapping[str, str]:
    return os.environ

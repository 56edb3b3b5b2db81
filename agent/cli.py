"""Command line: `egresswatch replay ...` (more subcommands arrive with later stages).

Exit status: 0 success (also when a capture was damaged part-way: the events up to the damage
are complete, and stderr says where it stopped); 2 for a usage problem (missing file, not a
capture, bad CIDR, bad config), always as one line `egresswatch: error: ...`; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent import __version__
from agent.config import Config, environment, load
from agent.errors import RunError, UsageError
from agent.stats import Stats

if TYPE_CHECKING:                 # imported where used: `egresswatch --help` stays quick
    from agent.capture.pcapfile import CaptureFile
    from geo.ledger import LedgerFile, TransferLedger

_EPILOG_REPLAY = """\
examples:
  egresswatch replay capture.pcap                     # EVE flow events to stdout
  egresswatch replay a.pcapng b.pcap.gz --eve out.json --internal 10.0.0.0/8,2001:db8::/32
output: one EVE JSON line per flow that crosses the inside/outside boundary, when the flow ends.
"""


def _version_text() -> str:
    from geo.resolver import embedded_age_days

    embedded = embedded_age_days()
    geoip = f"embedded GeoIP: IPFire Location, built {embedded[0]}" if embedded else "no embedded GeoIP database"
    return f"egresswatch {__version__} ({geoip})"


def _warn_if_stale(geoip_db: tuple[str, ...]) -> None:
    from geo import STALE_AFTER_DAYS
    from geo.resolver import embedded_age_days

    embedded = None if geoip_db else embedded_age_days()
    if embedded and embedded[1] > STALE_AFTER_DAYS:
        logging.getLogger("egresswatch").warning(
            "the embedded GeoIP database is %d days old (built %s); give a current one with --geoip-db",
            embedded[1], embedded[0])


_EPILOG_RUN = """\
examples:
  egresswatch run -i ens1f1 --eve /var/log/egresswatch/eve.json --workers 2
  egresswatch run -i ens1f1 --bpf 'not port 22' --metrics-listen 0.0.0.0:9917 --user egresswatch
needs CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode); started as root, it drops to --user
once the capture sockets are open.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as our one-line error, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _shared_options(parser: argparse.ArgumentParser) -> None:
    """Options that mean the same for replay and run."""
    parser.add_argument("--eve", metavar="OUT", help="EVE output file, or - for stdout (default: -; env EGRESSWATCH_EVE)")
    parser.add_argument("--internal", metavar="CIDR,...",
                        help="inside networks (default: RFC 1918, 100.64/10, fc00::/7, link-local; "
                             "env EGRESSWATCH_INTERNAL)")
    parser.add_argument("--geoip-db", metavar="MMDB", action="append",
                        help="MaxMind DB for countries (Country/City) or AS numbers (ASN); repeatable "
                             "(default: the embedded open database; env EGRESSWATCH_GEOIP_DB, comma-separated)")
    parser.add_argument("--home", metavar="CC,...", help="home jurisdiction country codes (default: the "
                                                          "profile's, CN for cn; env EGRESSWATCH_HOME)")
    parser.add_argument("--profile", metavar="NAME", help="jurisdiction profile: cn (default), eea, or a TOML "
                                                          "file (env EGRESSWATCH_PROFILE)")
    parser.add_argument("--ciio", action="store_true", default=None,
                        help="the organisation is a critical information infrastructure operator: every "
                             "cross-border threshold is zero")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (env EGRESSWATCH_CONFIG); "
                                                         "see deploy/egresswatch.toml")
    parser.add_argument("--rules", metavar="PACK.yaml", action="append",
                        help="important-data rule pack (repeatable; env EGRESSWATCH_RULES, comma-separated)")
    parser.add_argument("--rule-cache", metavar="DIR",
                        help="keep compiled rule databases here, so that a start with the same rules skips "
                             "compiling them: auto (default: $CACHE_DIRECTORY under systemd, else "
                             "$XDG_CACHE_HOME/egresswatch or ~/.cache/egresswatch), a directory, or off "
                             "(env EGRESSWATCH_RULE_CACHE)")
    parser.add_argument("--sensitivity-profile", metavar="NAME",
                        help="which classes are sensitive PI: pipl-35273 (GB/T 35273-2020 Annex B, default) "
                             "or gbt-45574 (GB/T 45574-2025); env EGRESSWATCH_SENSITIVITY_PROFILE")
    parser.add_argument("--register", metavar="REGISTER.yaml",
                        help="destination register: legal bases and denied destinations "
                             "(deploy/registers.example.yaml; env EGRESSWATCH_REGISTER)")
    parser.add_argument("--ledger", metavar="FILE",
                        help="keep the year's cross-border person counts in FILE across runs (read at the "
                             "start, written at the end; the live agent also every minute); off: this run only "
                             "(default auto: the live agent's in $STATE_DIRECTORY under systemd, else off; "
                             "replay only with a file named; env EGRESSWATCH_LEDGER)")
    parser.add_argument("--syslog", metavar="HOST:PORT",
                        help="also send alerts to this RFC 5424 syslog receiver (spooled on disk while it is "
                             "down; [syslog] in the config; env EGRESSWATCH_SYSLOG)")
    parser.add_argument("--syslog-transport", choices=("udp", "tcp", "tls"), help="default: tcp")
    parser.add_argument("--webhook", metavar="URL",
                        help="also POST alerts to this URL (spooled while it is down; token from env "
                             "EGRESSWATCH_WEBHOOK_TOKEN; env EGRESSWATCH_WEBHOOK)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="worker processes, flows split by hash; output identical to 1 worker "
                             "(default: 1; env EGRESSWATCH_WORKERS)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="egresswatch",
        description="Network egress monitor for cross-border data flow governance: "
                    "finds personal and important data leaving your network for another jurisdiction.",
    )
    parser.add_argument("--version", action="version", version=_version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    replay = sub.add_parser(
        "replay", help="replay pcap/pcapng captures (also gzip-compressed) and write EVE events",
        description="Replay capture files through the full pipeline and write EVE JSON events. "
                    "Several files are processed in order as one continuous capture.",
        epilog=_EPILOG_REPLAY, formatter_class=argparse.RawDescriptionHelpFormatter)
    replay.add_argument("pcaps", nargs="+", metavar="PCAP", help="capture file(s); format detected by content")
    _shared_options(replay)
    replay.add_argument("--metrics-textfile", metavar="FILE",
                        help="write Prometheus metrics here at the end, in node-exporter textfile format "
                             "(env EGRESSWATCH_METRICS_TEXTFILE)")
    replay.add_argument("--progress", choices=("auto", "always", "never"),
                        help="progress bar on stderr (default: auto = when stderr is a terminal)")
    replay.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")

    run = sub.add_parser(
        "run", help="capture live on an interface (AF_PACKET) and write EVE events, alerts and metrics",
        description="Capture on a mirror (span) port or gateway interface with a TPACKET_V3 ring per "
                    "worker, classify what leaves the network, and write EVE events; serve Prometheus "
                    "metrics. SIGTERM/SIGINT: flush every open flow and exit 0. SIGHUP: reopen output "
                    "files, reload rule packs and GeoIP databases.",
        epilog=_EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--interface", "-i", metavar="IF", help="capture interface (env EGRESSWATCH_INTERFACE)")
    run.add_argument("--bpf", metavar="EXPR", help="kernel filter, tcpdump syntax (env EGRESSWATCH_BPF)")
    run.add_argument("--metrics-listen", metavar="ADDR:PORT",
                     help="Prometheus /metrics address (default 127.0.0.1:9917; 'off' to disable; "
                          "env EGRESSWATCH_METRICS_LISTEN)")
    run.add_argument("--user", metavar="USER", help="run as this user once the sockets are open, when started "
                                                      "as root (default: nobody; env EGRESSWATCH_USER)")
    run.add_argument("--no-drop-privileges", dest="drop_privileges", action="store_false", default=None,
                     help="keep root and capabilities (debugging only)")
    run.add_argument("--no-promiscuous", dest="promiscuous", action="store_false", default=None,
                     help="do not put the interface in promiscuous mode")
    _shared_options(run)

    geo = sub.add_parser("geo", help="where addresses are: country, jurisdiction, cross-border, AS",
                         description="Look addresses up in MaxMind DB files and print one JSON object per "
                                     "address: {ip, country, jurisdiction, cross_border, asn, as_org}.")
    geo.add_argument("ips", nargs="+", metavar="IP")
    geo.add_argument("--geoip-db", metavar="MMDB", action="append",
                     help="MaxMind DB file: country, city or ASN (repeatable; env EGRESSWATCH_GEOIP_DB)")
    geo.add_argument("--home", metavar="CC,...", help="home country codes (default: the profile's; CN)")
    geo.add_argument("--profile", default="cn", metavar="NAME",
                     help="jurisdiction profile: cn (default), eea, or a TOML file")

    rules = sub.add_parser("rules", help="list the classification rules, or test them on files",
                           description="Inspect the personal-data classes and try them on text files.")
    rules_sub = rules.add_subparsers(dest="rules_command", metavar="ACTION", parser_class=_Parser)
    rules_list = rules_sub.add_parser("list", help="one line per class: id, category, sensitivity or grade, description")
    rules_list.add_argument("--rules", metavar="PACK.yaml", action="append", default=[],
                            help="also list the classes of this rule pack (repeatable)")
    rules_test = rules_sub.add_parser(
        "test", help="what would match in these files (values masked, never shown raw)",
        description="Scan each file as one stream, the way a request body is scanned, and print "
                    "one line per distinct value found: file, class, confidence, masked value.")
    rules_test.add_argument("--rules", metavar="PACK.yaml", action="append", default=[],
                            help="also apply this rule pack (repeatable)")
    rules_test.add_argument("files", nargs="+", metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(format="egresswatch: %(levelname)s: %(message)s", level=logging.WARNING)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        if args.command == "replay":
            return _replay(args)
        if args.command == "run":
            return _run(args)
        if args.command == "rules":
            return _rules(args)
        if args.command == "geo":
            return _geo(args)
        raise UsageError(f"unknown command {args.command}")
    except UsageError as exc:
        print(f"egresswatch: error: {exc}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"egresswatch: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("egresswatch: interrupted", file=sys.stderr)
        return 130


def _fewer_collections() -> None:
    """Flows, streams and findings are long-lived objects made by the thousand: with the default
    thresholds every few thousand allocations trigger a collection, and full ones walk every live
    flow (measured: 1.57 s of a 14.2 s replay, 0.43 s with these). Cycles are still collected."""
    gc.set_threshold(20_000, 20, 20)


def _replay(args: argparse.Namespace) -> int:
    from agent.pipeline import open_captures
    from geo.ledger import LedgerFile, TransferLedger, ledger_path

    config = _config_from(args, progress=args.progress, metrics_textfile=args.metrics_textfile)
    path = ledger_path(config.ledger, live=False)
    ledger_file = LedgerFile(path) if path else None
    try:
        digest_key, earlier = None, TransferLedger()
        if ledger_file is not None:
            ledger_file.lock()
            ledger_file.check_writable()
            digest_key, earlier = ledger_file.load()
        captures = open_captures(args.pcaps)
        return _replay_captures(args, config, captures, ledger_file, digest_key, earlier)
    finally:
        if ledger_file is not None:
            ledger_file.close()


def _replay_captures(args: argparse.Namespace, config: Config, captures: list[CaptureFile],
                     ledger_file: LedgerFile | None, digest_key: bytes | None, earlier: TransferLedger) -> int:
    from agent.exporters import open_exporters
    from agent.pipeline import Pipeline, jurisdiction_for
    from agent.report import Progress, ledger_lines, summary_line
    from agent.workers import replay_parallel
    from classifiers.classes import SENSITIVITY_PROFILES

    _warn_if_stale(config.geoip_db)
    exporters = open_exporters(config, append=False)
    _fewer_collections()
    # EGRESSWATCH_STRICT=1 (set by the test suite) turns contained internal errors into failures.
    show = config.progress == "always" or (config.progress == "auto" and sys.stderr.isatty())
    progress = Progress(sys.stderr) if show else None
    strict = bool(os.environ.get("EGRESSWATCH_STRICT"))
    try:
        if config.workers > 1:
            for capture in captures:
                capture.close()          # each worker opens its own
            result = replay_parallel(config, args.pcaps, config.workers, exporters, strict=strict,
                                     progress=progress.update if progress else None, digest_key=digest_key)
        else:
            result = Pipeline(config, exporters, Stats(), strict=strict, digest_key=digest_key).replay(
                captures, progress.update if progress else None)
    finally:
        if progress is not None:
            progress.clear()
        for exporter in exporters:
            exporter.close()          # network sinks drain for a bounded time, then keep the rest spooled
    failures = [failure for exporter in exporters if (failure := getattr(exporter, "failure", None))]
    if failures:
        raise RunError(f"{failures[0]} (output incomplete)")
    scope = "in this input"
    if ledger_file is not None:
        assert digest_key is not None
        # From here on the counts are the year's so far: the summary, the metrics and the file.
        earlier.merge(result.stats.ledger)
        result.stats.ledger = earlier
        try:
            ledger_file.save(digest_key, earlier)
        except OSError as exc:
            raise RunError(f"cannot write the ledger {ledger_file.path}: {exc.strerror or exc}") from None
        scope = f"in the ledger {ledger_file.path} (this input included)"
    for line in result.damaged:
        print(f"egresswatch: warning: capture damaged, processed up to the damage: {line}", file=sys.stderr)
    if config.metrics_textfile:
        _write_metrics_textfile(config, result.stats)
    if not args.quiet:
        print(summary_line(result), file=sys.stderr)
        for line in ledger_lines(result.stats.ledger, jurisdiction_for(config),
                                 SENSITIVITY_PROFILES[config.sensitivity_profile], scope):
            print(line, file=sys.stderr)
    return 0


def _write_metrics_textfile(config: Config, stats: Stats) -> None:
    from agent.metrics import Snapshot, latest_transfer_summary, write_textfile
    from agent.pipeline import jurisdiction_for
    from classifiers.classes import SENSITIVITY_PROFILES
    from geo.resolver import GeoResolver, geo_databases

    resolver = GeoResolver(geo_databases(config.geoip_db))
    summary = latest_transfer_summary(stats, jurisdiction_for(config), SENSITIVITY_PROFILES[config.sensitivity_profile])
    try:
        write_textfile(config.metrics_textfile, Snapshot(stats=stats, geoip_builds=dict(resolver.database_builds),
                                                         transfer_summary=summary))
    finally:
        resolver.close()


def _config_from(args: argparse.Namespace, **extra: object):
    return load(args.config, environment(), {
        "internal": args.internal, "eve": args.eve, "geoip_db": args.geoip_db,
        "home": args.home, "sensitivity_profile": args.sensitivity_profile, "profile": args.profile,
        "ciio": args.ciio,
        "rule_packs": args.rules, "workers": args.workers, "register": args.register,
        "rule_cache": args.rule_cache, "ledger": args.ledger,
        "syslog_address": args.syslog, "syslog_transport": args.syslog_transport, "webhook_url": args.webhook,
        **extra,
    })


def _run(args: argparse.Namespace) -> int:
    from agent.live import run_live

    config = _config_from(args, interface=args.interface, bpf=args.bpf, metrics_listen=args.metrics_listen,
                          user=args.user, drop_privileges=args.drop_privileges, promiscuous=args.promiscuous)
    _warn_if_stale(config.geoip_db)
    _fewer_collections()
    logging.getLogger("egresswatch").setLevel(logging.INFO)
    return run_live(config, user=config.capture.user, drop_privileges=config.capture.drop_privileges,
                    strict=bool(os.environ.get("EGRESSWATCH_STRICT")))


def _geo(args: argparse.Namespace) -> int:
    import json

    from agent.config import parse_home
    from geo.jurisdiction import load_profile
    from geo.resolver import GeoResolver, geo_databases, parse_ip

    packed = [(text, parse_ip(text)) for text in args.ips]          # every address valid before output
    profile = load_profile(args.profile)
    if args.home:
        profile = profile.with_home(parse_home(args.home))
    env_db = os.environ.get("EGRESSWATCH_GEOIP_DB", "")
    resolver = GeoResolver(geo_databases(args.geoip_db or env_db.split(",")))
    try:
        for text, address in packed:
            place = resolver.lookup(address)
            if resolver.first_error is not None:
                raise UsageError(f"GeoIP database is damaged: {resolver.first_error}")
            print(json.dumps({"ip": text, "country": place.country, "jurisdiction": profile.of(place.country),
                              "cross_border": profile.cross_border(place.country), "asn": place.asn,
                              "as_org": place.as_org}, ensure_ascii=False))
    finally:
        resolver.close()
    return 0


def _rules(args: argparse.Namespace) -> int:
    from classifiers.classes import CLASSES, RULES, SENSITIVITY_PROFILES
    from classifiers.engine import Engine
    from classifiers.findings import FindingLimits, Findings
    from classifiers.normalize import ascii_digits_utf8
    from classifiers.rulepacks import load_packs

    if args.rules_command not in ("list", "test"):
        raise UsageError("rules needs an action: list or test")
    pack_rules, packs = load_packs(args.rules)
    profile = SENSITIVITY_PROFILES["pipl-35273"]
    if args.rules_command == "list":
        for info in CLASSES:
            sensitive = "sensitive" if profile[info.id] else "not-sensitive"
            print(f"{info.id:<16} {info.category:<14} {sensitive:<14} {info.description}")
        for pack in packs.values():
            print(f"{pack.info.id:<16} {pack.info.category:<14} {pack.grade:<14} {pack.info.description}")
        return 0
    engine = Engine(RULES + tuple(pack_rules))
    for path in args.files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        # Findings masks exactly as events do; limits high enough to list every distinct value.
        findings = Findings(FindingLimits(max_samples=1 << 30), profile, b"rules-test", packs)
        engine.scan_bytes(ascii_digits_utf8(data), findings.add)
        for class_id, finding in findings.by_class.items():
            confidence = "low" if finding.low_confidence == len(finding.digests) else "high"
            for sample in finding.samples:
                print(f"{path}\t{class_id}\t{confidence}\t{sample}")
    return 0


def entry() -> None:
    """The `egresswatch` command: main(), then exit without tearing the interpreter down.

    Every file, socket and sink is closed by the time main() returns; what teardown would do
    is free the objects of a large replay one by one and collect them (1.2 s after a 10 s
    replay of 300 MB with 30k flows), which the operating system does at once."""
    status = main()
    logging.shutdown()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass                      # the reader went away (| head): nothing left to say to it
    except OSError as exc:        # a full disk or an I/O error: the output is incomplete
        print(f"egresswatch: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        status = status or 1
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(status)


if __name__ == "__main__":
    entry()

"""Peers on the same capture (issue 5): egresswatch replay against other ways of doing the work.

    python -m benchmarks.bench_peers CAPTURE --truth TRUTH.json [--peers a,b,...] [--slice-packets N]
        [--repeat 3] [--repeat-under 120] [--timeout 1800] [--terms 2000] [--rules PACK.yaml ...]
        [--json OUT.json]

Every approach runs on the same file in one run, one at a time, each in its own process pinned
with `taskset -c 0` (egresswatch with 2 workers gets cores 0,1); this harness keeps to the last
core to watch them. Per approach: Mbit/s of captured bytes and packets/s, the ratio to the
Hyperscan limit measured in the same run, peak RSS of the process tree (sampled from /proc
every 20 ms: summed VmRSS, and the largest VmHWM), and recall/precision against the generator's
ground truth where the approach reports confirmed matches per flow. Approaches that only count
regex hits report hits, which are not comparable between approaches (different engines count
overlapping matches differently).

Fast approaches (first run under --repeat-under seconds) are repeated, interleaved with the
others, and the best run counts: this machine is noisy, so compare ratios. An approach that
exceeds --timeout is killed and reported as a timeout. scapy and pyshark run on the first
--slice-packets packets only, and their rates say "extrapolated from N packets".

Rules: the built-in personal-data rules, the rule packs the truth names (the generator plants
the classes of deploy/rules/example-important-data.yaml; --rules overrides) and a pack of
--terms synthetic UTF-8/GBK keywords (the issue's limit used 2,000, which the truth does not
score), the same for the Hyperscan limit, the per-packet peer and egresswatch; `re` uses the
same patterns translated.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PACK = ROOT / "deploy" / "rules" / "example-important-data.yaml"
RESULTS = ROOT / "benchmarks" / "results"
SAMPLE_SECONDS = 0.02

# The regexes of the single-regex tools (ngrep, tshark): the resident-id rule of
# classifiers.classes.RULES, and for "two regexes" that plus the mobile-number rule.
ONE_REGEX = r"[1-8]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
TWO_REGEX = ONE_REGEX + r"|(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}"
_NGREP_HEADER = re.compile(rb"^[A-Z] \d{4}/\d\d/\d\d ", re.MULTILINE)
_SUMMARY_SECONDS = re.compile(r" in ([0-9.]+) s \(")

FlowKey = tuple[str, int, str, int]


class BenchError(Exception):
    """Bad input to the harness: reported as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as the harness's one line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BenchError(message)


# -- the approaches ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    capture: str
    rule_packs: tuple[str, ...]
    slice_packets: int
    run_dir: Path
    truth: dict[str, Any] | None      # ground truth, when the run scores detection


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    what: str                                         # what it does, exactly, for the legend
    argv: Callable[[Context], list[str]]
    missing: Callable[[], str | None]                 # why it cannot run here, or None
    cpus: str = "0"
    reports_json: bool = False                        # a benchmarks.peers child: one JSON line on stdout
    sliced: bool = False
    count_hits: Callable[[bytes], int] | None = None  # hits from a separate untimed run's stdout
    eve: str = ""                                     # EVE file name in the run directory (egresswatch)
    pending: Callable[[], str | None] = lambda: None  # a feature the approach needs is not there yet


def _python_peer(name: str, what: str, modules: tuple[str, ...], *, sliced: bool = False,
                 tools: tuple[str, ...] = ()) -> Peer:
    def argv(ctx: Context) -> list[str]:
        args = [sys.executable, "-m", "benchmarks.peers", name, ctx.capture]
        for pack in ctx.rule_packs:
            args += ["--rules", pack]
        if sliced:
            args += ["--slice-packets", str(ctx.slice_packets)]
        return args

    def missing() -> str | None:
        for module in modules:
            if find_spec(module) is None:
                return f"Python package {module} not installed (pip install -r benchmarks/requirements.txt)"
        for tool in tools:
            if shutil.which(tool) is None:
                return f"{tool} not installed (apt-get install -y {tool})"
        return None

    return Peer(name, what, argv, missing, reports_json=True, sliced=sliced)


def _tool_missing(tool: str, package: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(tool) else f"{tool} not installed (apt-get install -y {package})"


def _ngrep(name: str, regex: str, what: str) -> Peer:
    return Peer(name, what, lambda ctx: ["ngrep", "-I", ctx.capture, "-q", "-t", regex],
                _tool_missing("ngrep", "ngrep"), count_hits=lambda out: len(_NGREP_HEADER.findall(out)))


def _egresswatch() -> str:
    beside = Path(sys.executable).with_name("egresswatch")
    return str(beside) if beside.exists() else (shutil.which("egresswatch") or "egresswatch")


def _egresswatch_argv(workers: int, eve: str) -> Callable[[Context], list[str]]:
    def argv(ctx: Context) -> list[str]:
        args = [_egresswatch(), "replay", ctx.capture, "--eve", str(ctx.run_dir / eve), "--progress", "never"]
        for pack in ctx.rule_packs:
            args += ["--rules", pack]
        return args + (["--workers", str(workers)] if workers > 1 else [])
    return argv


def _egresswatch_missing() -> str | None:
    return None if Path(_egresswatch()).exists() or shutil.which("egresswatch") else \
        "egresswatch not installed (pip install -e .)"


def _workers_pending() -> str | None:
    """The 2-worker row waits for `egresswatch replay --workers` (asked at run time, so the row
    appears as soon as the option does)."""
    try:
        help_text = subprocess.run([_egresswatch(), "replay", "--help"], capture_output=True, text=True,
                                   timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot ask egresswatch for its options: {exc}"
    return None if "--workers" in help_text else "pending: egresswatch replay has no --workers option yet"


PEERS: tuple[Peer, ...] = (
    _python_peer("hyperscan-limit", "Hyperscan block mode over all TCP/UDP payloads concatenated in one buffer, "
                 "egresswatch's rules and flags; only the scan timed", ("hyperscan", "dpkt")),
    _python_peer("re", "Python re over the same one payload buffer, one finditer per rule; only the scans timed",
                 ("dpkt",)),
    _python_peer("dpkt-hyperscan", "dpkt parse + Hyperscan block scan of each TCP/UDP payload alone (no "
                 "reassembly, no decoding), candidates confirmed by egresswatch's engine on that payload",
                 ("hyperscan", "dpkt")),
    _python_peer("scapy-re", "scapy PcapReader dissection + Python re over each TCP/UDP payload", ("scapy",),
                 sliced=True),
    _python_peer("pyshark-re", "pyshark (tshark PDML) + Python re over tcp.payload/udp.payload (DNS is "
                 "dissected, not matched)", ("pyshark",), sliced=True, tools=("tshark",)),
    Peer("tshark", "tshark full dissection of every frame + display filter `frame matches` with one PCRE2 "
         "regex (resident id) over the frame bytes; prints the matching frame numbers",
         lambda ctx: ["tshark", "-n", "-r", ctx.capture, "-Y", f'frame matches r"{ONE_REGEX}"',
                      "-T", "fields", "-e", "frame.number"],
         _tool_missing("tshark", "tshark"), count_hits=lambda out: len(out.split())),
    _ngrep("ngrep-1", ONE_REGEX, "ngrep -q -t, one PCRE2 regex (resident id) over each packet's payload, "
           "output to /dev/null"),
    _ngrep("ngrep-2", TWO_REGEX, "ngrep -q -t, two regexes as one alternation (resident id | mobile), "
           "output to /dev/null"),
    _python_peer("nfstream", "nfstream flow metering (C core), no payload matching, no nDPI dissection, 1 meter",
                 ("nfstream",)),
    Peer("egresswatch-1w", "egresswatch replay, full pipeline, --eve to a file, 1 process",
         _egresswatch_argv(1, "eve-1w.json"), _egresswatch_missing, eve="eve-1w.json"),
    Peer("egresswatch-2w", "egresswatch replay --workers 2, full pipeline, --eve to a file, cores 0 and 1",
         _egresswatch_argv(2, "eve-2w.json"), _egresswatch_missing, cpus="0,1", eve="eve-2w.json",
         pending=_workers_pending),
)
PEER_BY_NAME = {peer.name: peer for peer in PEERS}


# -- running one process -------------------------------------------------------------------


@dataclass(slots=True)
class Measured:
    seconds: float                 # wall clock, spawn to reap
    peak_rss_kb: int
    returncode: int | None         # None: killed at the timeout
    stdout: bytes = b""
    stderr: bytes = b""


def _tree_memory_kb(pid: int) -> tuple[int, int]:
    """(resident set of `pid` and all its descendants together, the largest peak resident set
    (VmHWM) of any one of them), from /proc.

    Not the reaped child's ru_maxrss: Python starts children with vfork, and Linux carries the
    parent's peak RSS into the child's maxrss at exec, so a 10 MB ngrep would report the
    harness's own peak (measured: every child of a run reported the harness's 324 MB)."""
    total = largest = 0
    stack = [pid]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            with open(f"/proc/{current}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1])
                    elif line.startswith(b"VmHWM:"):
                        largest = max(largest, int(line.split()[1]))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", "rb") as fh:
                    stack.extend(int(child) for child in fh.read().split())
        except (OSError, ValueError):
            continue                       # exited between two reads
    return total, largest


def _drain(stream: Any, into: list[bytes]) -> None:
    into.append(stream.read())


def run_process(argv: list[str], cpus: str, timeout: float, *, keep_stdout: bool) -> Measured:
    """Run `argv` pinned to `cpus`; wall time, peak RSS of its process tree, output.

    Peak RSS is sampled every SAMPLE_SECONDS: the larger of the tree's summed resident set
    and the largest single-process high-water mark seen (exact for one process; for several,
    peaks shorter than a sample can be missed).

    The child gets its own session, so at the timeout the whole group it started (pyshark's
    tshark, nfstream's meter, replay workers) is killed by the child's process id."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", cpus, *argv]
    out: list[bytes] = []
    err: list[bytes] = []
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, cwd=ROOT)
    readers = [threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)]
    if keep_stdout:
        readers.append(threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True))
    for reader in readers:
        reader.start()
    peak = samples = 0
    returncode: int | None = None
    while True:
        peak = max(peak, *_tree_memory_kb(proc.pid))     # before reaping: /proc still has it
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            seconds = time.perf_counter() - started
            returncode = os.waitstatus_to_exitcode(status)
            proc.returncode = returncode          # reaped here, not by Popen
            break
        if time.perf_counter() - started > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
            proc.returncode = -9
            seconds = time.perf_counter() - started
            break
        # Samples 1, 2, 4 ... ms apart at first, so that a short run is still seen.
        time.sleep(min(SAMPLE_SECONDS, 0.001 * 2 ** min(samples, 10)))
        samples += 1
    for reader in readers:
        reader.join(timeout=30)
    return Measured(seconds, peak, returncode, b"".join(out), b"".join(err))


# -- detection scoring ---------------------------------------------------------------------


def expected_counts(truth: dict[str, Any]) -> dict[FlowKey, Counter[str]]:
    """Distinct planted values per egress flow and class, as `benchmarks.bench_detection` counts them."""
    expected: dict[FlowKey, Counter[str]] = {}
    for entry in truth["planted"]:
        f = entry["flow"]
        expected[(f["src"], f["sport"], f["dst"], f["dport"])] = Counter(
            {cls: len(set(values)) for cls, values in entry["values"].items()})
    return expected


def score(found: dict[FlowKey, Counter[str]], truth: dict[str, Any]) -> dict[str, Any]:
    """Precision and recall by distinct count per (flow, class), the comparison of
    benchmarks.bench_detection: tp = min(found, expected), fp = the excess, fn = the shortfall;
    anything reported for a flow the truth lists no values for (domestic, inbound, TLS, SSH)
    is a false positive. Only the truth's value classes are scored (built-in and planted
    rule-pack classes; not the synthetic keywords)."""
    classes = set(truth["value_classes"])
    expected = expected_counts(truth)
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    fp_outside_planted = 0
    for key, got in found.items():
        want = expected.get(key, Counter())
        for cls in (set(want) | set(got)) & classes:
            tp[cls] += min(want[cls], got[cls])
            fp[cls] += max(0, got[cls] - want[cls])
            fn[cls] += max(0, want[cls] - got[cls])
            if key not in expected:
                fp_outside_planted += got[cls]
    for key, want in expected.items():
        if key not in found:
            for cls, n in want.items():
                if cls in classes:
                    fn[cls] += n
    by_class = {}
    for cls in sorted(set(tp) | set(fp) | set(fn)):
        by_class[cls] = {"tp": tp[cls], "fp": fp[cls], "fn": fn[cls], "precision": _ratio(tp[cls], fp[cls]),
                         "recall": _ratio(tp[cls], fn[cls])}
    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return {"precision": _ratio(total_tp, total_fp), "recall": _ratio(total_tp, total_fn), "tp": total_tp,
            "fp": total_fp, "fn": total_fn, "fp_in_unplanted_flows": fp_outside_planted, "by_class": by_class}


def _ratio(tp: int, other: int) -> float:
    return tp / (tp + other) if tp + other else 1.0


def eve_counts(path: Path) -> dict[FlowKey, Counter[str]]:
    """Per flow: the count of each class in the EVE flow events (alerts repeat them)."""
    found: dict[FlowKey, Counter[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            event = json.loads(line)
            if event.get("event_type") != "flow":
                continue
            matches = event.get("classification", {}).get("matches", [])
            if matches:
                key = (event["src_ip"], event["src_port"], event["dest_ip"], event["dest_port"])
                found[key] = Counter({m["class"]: m["count"] for m in matches})
    return found


def json_counts(rows: Iterable[list[Any]]) -> dict[FlowKey, Counter[str]]:
    return {(src, sport, dst, dport): Counter(per_class) for src, sport, dst, dport, per_class in rows}


# -- the run -------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    name: str
    what: str
    status: str = "ok"                  # ok | timeout | skipped | pending | error
    reason: str = ""
    runs: list[float] = field(default_factory=list)
    peak_rss_kb: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    hits: int | None = None
    detection: dict[str, Any] | None = None
    own_seconds: float | None = None    # egresswatch's own replay time (its summary line)


def _measure(peer: Peer, ctx: Context, row: Row, timeout: float) -> None:
    measured = run_process(peer.argv(ctx), peer.cpus, timeout, keep_stdout=peer.reports_json)
    row.peak_rss_kb = max(row.peak_rss_kb, measured.peak_rss_kb)
    if measured.returncode is None:
        if not row.runs:                 # a repeat that times out leaves the earlier runs standing
            row.status, row.reason = "timeout", f"killed after {timeout:.0f} s"
        return
    if measured.returncode != 0:
        tail = measured.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        row.status, row.reason = "error", f"exit {measured.returncode}: {tail[0][:200]}"
        return
    seconds = measured.seconds
    if peer.reports_json:
        result = json.loads(measured.stdout.decode().strip().splitlines()[-1])
        seconds = result["seconds"]
        if not row.result or seconds < row.result["seconds"]:
            row.result = result
        row.hits = result.get("hits")
        if "found" in result and ctx.truth is not None:
            row.detection = score(json_counts(result["found"]), ctx.truth)
    if peer.eve:
        own = _SUMMARY_SECONDS.search(measured.stderr.decode("utf-8", "replace"))
        if own:
            row.own_seconds = min(row.own_seconds or float("inf"), float(own.group(1)))
        if ctx.truth is not None:
            row.detection = score(eve_counts(ctx.run_dir / peer.eve), ctx.truth)
    row.runs.append(seconds)


def default_packs(truth: dict[str, Any] | None) -> tuple[str, ...]:
    """The rule packs the truth's generator planted classes of (paths relative to the project,
    as bench_detection loads them), else the example pack."""
    named = truth.get("rule_packs", []) if truth else []
    return tuple(str(ROOT / pack) for pack in named) or (str(EXAMPLE_PACK),)


def run_peers(capture: str, truth: dict[str, Any] | None, names: list[str], *, slice_packets: int = 20_000,
              repeat: int = 3, repeat_under: float = 120.0, timeout: float = 1800.0, terms: int = 2000,
              rule_packs: tuple[str, ...] = (), log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run the named approaches on `capture`; the run's record (rows, totals, machine)."""
    from benchmarks.bench_replay import stage_read
    from benchmarks.peers import write_terms_pack

    packets, nbytes = stage_read(capture)
    rows = {name: Row(name, PEER_BY_NAME[name].what) for name in names}
    # Bytecode as an installed agent has it: where PYTHONDONTWRITEBYTECODE is set, every start
    # would otherwise compile the agent's source again (0.2 s of each egresswatch run here).
    for package in ("agent", "classifiers", "geo"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        run_dir = Path(tmp)
        packs = tuple(rule_packs) or default_packs(truth)
        if terms:
            packs += (str(write_terms_pack(run_dir / "synthetic-terms.yaml", terms)),)
        ctx = Context(capture, packs, slice_packets, run_dir, truth)
        runnable = []
        for name in names:
            peer, row = PEER_BY_NAME[name], rows[name]
            reason = peer.missing()
            if reason is None:
                pending = peer.pending()
                if pending:
                    row.status, row.reason = "pending", pending
                    continue
            else:
                row.status, row.reason = "skipped", reason
                continue
            runnable.append(peer)
        # Round 1 runs everything; later rounds repeat the fast ones, interleaved, so that a
        # noisy neighbour slows all of them alike. The best run counts.
        for round_index in range(max(1, repeat)):
            for peer in runnable:
                row = rows[peer.name]
                if row.status != "ok" or (round_index and min(row.runs) > repeat_under):
                    continue
                log(f"# round {round_index + 1}: {peer.name}")
                _measure(peer, ctx, row, timeout)
        for peer in runnable:
            row = rows[peer.name]
            if peer.count_hits is not None and row.status == "ok":
                counted = run_process(peer.argv(ctx), peer.cpus, timeout, keep_stdout=True)
                row.hits = peer.count_hits(counted.stdout) if counted.returncode == 0 else None
    return _record(capture, packets, nbytes, [rows[n] for n in names], truth is not None, packs, terms, slice_packets)


def _record(capture: str, packets: int, nbytes: int, rows: list[Row], scored: bool, packs: tuple[str, ...],
            terms: int, slice_packets: int) -> dict[str, Any]:
    out_rows = []
    for row in rows:
        entry: dict[str, Any] = {"approach": row.name, "what": row.what, "status": row.status}
        if row.reason:
            entry["reason"] = row.reason
        if row.status == "ok":
            sliced = bool(row.result.get("sliced"))
            best = min(row.runs)
            done_packets, done_bytes = (row.result["packets"], row.result["bytes"]) if sliced else (packets, nbytes)
            entry.update({
                "seconds": best, "runs": row.runs, "timed": row.result.get("timed", "process wall clock"),
                "packets": done_packets, "bytes": done_bytes,
                "mbit_s": done_bytes * 8 / 1e6 / best, "packets_s": done_packets / best,
                "peak_rss_mb": row.peak_rss_kb / 1024 or None, "hits": row.hits,
                "note": row.result.get("note", ""),
            })
            if sliced:
                entry["note"] = f"extrapolated from {done_packets:,} packets" + (
                    f"; {entry['note']}" if entry["note"] else "")
            if row.own_seconds is not None:
                entry["own_seconds"] = row.own_seconds
                entry["own_mbit_s"] = nbytes * 8 / 1e6 / row.own_seconds
            if row.detection is not None:
                entry["detection"] = row.detection
        out_rows.append(entry)
    limit = next((r for r in out_rows if r["approach"] == "hyperscan-limit" and r["status"] == "ok"), None)
    for entry in out_rows:
        if limit is not None and entry["status"] == "ok":
            entry["x_limit"] = entry["mbit_s"] / limit["mbit_s"]
            if "own_mbit_s" in entry:
                entry["own_x_limit"] = entry["own_mbit_s"] / limit["mbit_s"]
    return {
        "capture": Path(capture).name, "capture_packets": packets, "capture_bytes": nbytes,
        "scored_against_truth": scored, "slice_packets": slice_packets,
        "rules": ["classifiers.classes.RULES"] + [_shown_path(p) for p in packs],
        "synthetic_terms": terms, "limit_mbit_s": limit["mbit_s"] if limit else None,
        "machine": machine(), "rows": out_rows,
    }


def _shown_path(path: str) -> str:
    """A rule pack as the record shows it: relative to the project, or its synthetic nature."""
    resolved = Path(path).resolve()
    if resolved.name == "synthetic-terms.yaml":
        return "synthetic keywords (benchmarks.peers.synthetic_terms)"
    try:
        return str(resolved.relative_to(ROOT))
    except ValueError:
        return resolved.name


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu_model": model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.machine()}"}


# -- output --------------------------------------------------------------------------------


def table(record: dict[str, Any]) -> str:
    """The run as a Markdown table."""
    lines = ["| approach | Mbit/s | packets/s | × limit | peak RSS MB | recall | precision | hits | timed | note |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in record["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['approach']} | {row['status']} | | | | | | | | {row.get('reason', '')} |")
            continue
        detection = row.get("detection")
        recall = f"{detection['recall']:.4f}" if detection else "n/a"
        precision = f"{detection['precision']:.4f}" if detection else "n/a"
        hits = f"{row['hits']:,}" if row.get("hits") is not None else ""
        ratio = f"{row['x_limit']:.3f}" if "x_limit" in row else ""
        note = row["note"]
        if "own_mbit_s" in row:
            own = f"{row['own_mbit_s']:,.0f} Mbit/s" + (f" = {row['own_x_limit']:.3f}×" if "own_x_limit" in row else "")
            note = f"replay loop alone (its summary line): {own}" + (f"; {note}" if note else "")
        if len(row["runs"]) > 1:
            note = f"best of {len(row['runs'])}" + (f"; {note}" if note else "")
        rss = "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:,.0f}"
        lines.append(f"| {row['approach']} | {row['mbit_s']:,.1f} | {row['packets_s']:,.0f} | {ratio} | "
                     f"{rss} | {recall} | {precision} | {hits} | {row['timed']} | {note} |")
    return "\n".join(lines)


def _default_json(capture: str) -> Path:
    size = os.path.getsize(capture)
    return RESULTS / f"peers-{round(size / 1e6)}M.json"


def _load_truth(path: str) -> dict[str, Any]:
    try:
        truth = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{path}: no such truth file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path}: not a ground-truth JSON file: {exc}") from None
    if not isinstance(truth, dict) or "planted" not in truth or "value_classes" not in truth:
        raise BenchError(f"{path}: not a ground-truth file of benchmarks.gen_capture (no 'planted'/'value_classes')")
    return truth


def _check_capture(path: str) -> None:
    """The peers read the file with dpkt, tshark, ngrep, libpcap: uncompressed pcap or pcapng only."""
    from agent.capture.pcapfile import CaptureFile
    from agent.errors import UsageError

    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        CaptureFile(path).close()
    except UsageError as exc:
        raise BenchError(str(exc)) from None
    except OSError as exc:
        raise BenchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if magic not in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
                     b"\x0a\x0d\x0d\x0a"):
        raise BenchError(f"{path}: the peers need an uncompressed pcap or pcapng file")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m benchmarks.bench_peers", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture")
    parser.add_argument("--truth", help="ground truth of benchmarks.gen_capture (for recall/precision)")
    parser.add_argument("--peers", default=",".join(PEER_BY_NAME), help="comma-separated (default: all): "
                        + ", ".join(PEER_BY_NAME))
    parser.add_argument("--slice-packets", type=int, default=20_000, metavar="N",
                        help="packets for the slow peers (scapy, pyshark); default 20000")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for the fast approaches (default 3)")
    parser.add_argument("--repeat-under", type=float, default=120.0, metavar="SECONDS",
                        help="repeat only approaches whose first run took less (default 120)")
    parser.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS", help="per run (default 1800)")
    parser.add_argument("--terms", type=int, default=2000, help="synthetic keywords added to the rules (default 2000)")
    parser.add_argument("--rules", action="append", default=[], metavar="PACK.yaml",
                        help="rule packs (default: those the truth names, else "
                             "deploy/rules/example-important-data.yaml)")
    parser.add_argument("--json", metavar="OUT", help="record of the run (default: benchmarks/results/peers-<size>M.json)")
    try:
        args = parser.parse_args(argv)
        names = [n.strip() for n in args.peers.split(",") if n.strip()]
        unknown = [n for n in names if n not in PEER_BY_NAME]
        if unknown or not names:
            raise BenchError(f"unknown peer(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(PEER_BY_NAME)}")
        if args.slice_packets < 1 or args.repeat < 1 or args.timeout <= 0 or args.terms < 0:
            raise BenchError("--slice-packets and --repeat must be at least 1, --timeout positive, --terms not negative")
        _check_capture(args.capture)
        truth = _load_truth(args.truth) if args.truth else None
        for pack in args.rules:
            from agent.errors import UsageError
            from classifiers.rulepacks import load_packs
            try:
                load_packs([pack])
            except UsageError as exc:
                raise BenchError(str(exc)) from None
    except BenchError as exc:
        print(f"bench_peers: error: {exc}", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[-1]})        # the harness keeps off core 0
    record = run_peers(args.capture, truth, names, slice_packets=args.slice_packets, repeat=args.repeat,
                       repeat_under=args.repeat_under, timeout=args.timeout, terms=args.terms,
                       rule_packs=tuple(args.rules), log=lambda line: print(line, file=sys.stderr, flush=True))
    record["command"] = "python -m benchmarks.bench_peers " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(record)
    machine_line = record["machine"]
    print(f"# {record['capture']}: {record['capture_bytes'] / 1e6:.1f} MB, {record['capture_packets']:,} packets; "
          f"{machine_line['cpu_model']}, {machine_line['cpus']} CPUs, Python {machine_line['python']}")
    print(text)
    out = Path(args.json) if args.json else _default_json(args.capture)
    out.parent.mkdir(parents=True, exist_ok=True)
    record["table"] = text
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"# written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The deployment artefacts in deploy/: systemd unit, container image, Kubernetes DaemonSet,
Prometheus rules and example configuration, Grafana dashboard.

Static checks parse each file and hold it against the agent itself (its command line, its
configuration loader, the metric families it exposes). Where a tool is installed the files are
handed to it: `systemd-analyze verify` and `security`, `promtool check` and `promtool test rules`.
Two end-to-end tests (root: they create network namespaces) start the agent under the privilege
model each artefact sets up — the systemd unit's user, ambient capabilities, bounding set,
no_new_privs and system call filter; the image's file capabilities with the DaemonSet's
capabilities — and check that it captures, holds no capability afterwards, and stops cleanly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent import privileges
from agent.cli import build_parser
from agent.config import load
from agent.metrics import AgentCollector, MetricsListen, SinkCounters, Snapshot, WorkerResources
from tests.streams import PROJECT_ROOT, wait_for

DEPLOY = PROJECT_ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "egresswatch.service"
ENV_FILE = DEPLOY / "systemd" / "egresswatch.env"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
DAEMONSET = DEPLOY / "kubernetes" / "daemonset.yaml"
CONFIGMAP = DEPLOY / "kubernetes" / "configmap.yaml"
RULES = DEPLOY / "prometheus" / "egresswatch-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "egresswatch-rules.test.yml"
PROMETHEUS_EXAMPLE = DEPLOY / "prometheus" / "prometheus.example.yml"
DASHBOARD = DEPLOY / "grafana" / "egresswatch-dashboard.json"
README = DEPLOY / "README.md"
SAMPLE = PROJECT_ROOT / "samples" / "sample-egress.pcap"


def _sample_frames() -> int:
    from agent.capture.pcapfile import CaptureFile
    capture = CaptureFile(str(SAMPLE))
    try:
        return sum(1 for _ in capture.frames())
    finally:
        capture.close()

# The metric names the agent promises (agent/metrics.py); rules and dashboard may use these only.
METRICS = frozenset({
    "egresswatch_build_info", "egresswatch_geoip_database_build_timestamp_seconds",
    "egresswatch_capture_packets_total", "egresswatch_capture_bytes_total",
    "egresswatch_capture_kernel_drops_total", "egresswatch_capture_kernel_queue_freezes_total",
    "egresswatch_decode_anomalies_total", "egresswatch_flows_active", "egresswatch_flows_total",
    "egresswatch_reassembly_gaps_total", "egresswatch_reassembly_memcap_hits_total",
    "egresswatch_reassembly_memuse_bytes", "egresswatch_egress_bytes_total",
    "egresswatch_classified_values_total", "egresswatch_validator_rejects_total", "egresswatch_alerts_total",
    "egresswatch_transfers_total", "egresswatch_sink_queue_depth", "egresswatch_sink_sent_events_total",
    "egresswatch_sink_dropped_events_total", "egresswatch_sink_spool_bytes",
    "egresswatch_scan_duration_seconds_bucket", "egresswatch_scan_duration_seconds_sum",
    "egresswatch_scan_duration_seconds_count", "egresswatch_worker_cpu_seconds_total",
    "egresswatch_worker_resident_memory_bytes", "egresswatch_eve_write_errors_total",
})
PROCESS_METRICS = frozenset({"process_resident_memory_bytes", "process_cpu_seconds_total"})
# Labels a dashboard may show or group by: the agent's bounded labels, `job` and `le`. Never
# `instance` (a target address) or anything else that could be an address or a host name.
DASHBOARD_LABELS = frozenset({"job", "le", "class", "jurisdiction", "severity", "sink", "direction",
                              "cross_border", "database", "kind", "version", "status", "worker"})
CAPTURE_CAPABILITIES = {"CAP_NET_RAW", "CAP_NET_ADMIN"}
CAP_NET_ADMIN_BIT, CAP_NET_RAW_BIT = 12, 13


def _tool(name: str) -> str | None:
    return shutil.which(name)


needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: creates network namespaces and sets file capabilities")


# ---------------------------------------------------------------------------------------------
# PromQL: which metric names and label names an expression references.

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\]]*\]")
_NUMBER = re.compile(r"(?<![\w:.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?(?![\w:])")
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                       "bool", "offset", "inf", "nan"})


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) in a PromQL expression; Grafana variables allowed."""
    text = _STRING.sub('""', expr)
    labels = {name for block in _MATCHERS.findall(text) for name in _MATCHER_LABEL.findall(block)}
    labels |= {name.strip() for group in _GROUPING.findall(text) for name in group.split(",") if name.strip()}
    text = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", text)))
    text = _NUMBER.sub(" ", re.sub(r"\$\{?\w+\}?", " ", text))
    metrics = set()
    for match in _IDENTIFIER.finditer(text):
        followed_by_call = text[match.end():].lstrip().startswith("(")
        if match.group() not in _KEYWORDS and not followed_by_call:
            metrics.add(match.group())
    return metrics, labels


def test_promql_names_finds_metrics_and_labels():
    expr = ('sum by (instance) (rate(a_total{x="y", z=~"w.*"}[5m])) / on(job) group_left(k) b offset 5m '
            '> 0.01 and time() - c{d!="1e3"} > 90 * 86400 or vector(0)')
    assert promql_names(expr) == ({"a_total", "b", "c"}, {"instance", "x", "z", "job", "k", "d"})
    assert promql_names('max(rate(m1{job="$job"}[$__rate_interval]) / rate(m2[${__range}]))') == \
        ({"m1", "m2"}, {"job"})


# ---------------------------------------------------------------------------------------------
# What the agent exposes: a real replay's metrics textfile plus the sink families.

@pytest.fixture(scope="module")
def exposed(tmp_path_factory) -> dict[str, set[str]]:
    """Sample name -> label names seen, from the metrics of a replay of the bundled sample and
    the families of a snapshot with one sink (replay has no sinks)."""
    textfile = tmp_path_factory.mktemp("metrics") / "replay.prom"
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(SAMPLE), "--eve", os.devnull, "-q",
                             "--metrics-textfile", str(textfile)], capture_output=True, text=True, timeout=300,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(lambda: Snapshot(sinks=[SinkCounters("webhook", 1, 2, 3, 4)],
                                                      workers=[WorkerResources(0, 1.5, 50_000_000)])))
    names: dict[str, set[str]] = {}
    for text in (textfile.read_text(), generate_latest(registry).decode()):
        for family in text_string_to_metric_families(text):
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
            for suffix in suffixes:
                names.setdefault(family.name + suffix, set())
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_metric_contract_is_what_the_agent_exposes(exposed: dict[str, set[str]]):
    assert METRICS <= set(exposed), sorted(METRICS - set(exposed))
    # The replay saw personal data going abroad: the labelled families the rules group by are real.
    assert exposed["egresswatch_alerts_total"] == {"class", "severity"}
    assert exposed["egresswatch_classified_values_total"] == {"class", "jurisdiction"}
    assert exposed["egresswatch_egress_bytes_total"] == {"jurisdiction", "direction"}
    assert exposed["egresswatch_flows_total"] == {"cross_border"}
    assert exposed["egresswatch_geoip_database_build_timestamp_seconds"] == {"database"}
    assert exposed["egresswatch_sink_dropped_events_total"] == {"sink"}


def _check_references(exprs: list[str], exposed: dict[str, set[str]], allowed_metrics: frozenset[str],
                      allowed_labels: frozenset[str]) -> None:
    for expr in exprs:
        metrics, labels = promql_names(expr)
        assert metrics, f"no metric in {expr!r}"
        assert metrics <= allowed_metrics, f"{sorted(metrics - allowed_metrics)} in {expr!r}"
        assert labels <= allowed_labels, f"labels {sorted(labels - allowed_labels)} in {expr!r}"
        for name in metrics & METRICS:
            assert name in exposed, f"the agent does not expose {name}"
        # The labels used are labels these metrics have (where the replay produced samples).
        known = set().union(*(exposed.get(name, set()) for name in metrics))
        if all(exposed.get(name) for name in metrics):
            assert labels - {"job", "instance", "le"} <= known, f"{sorted(labels - known)} in {expr!r}"


# ---------------------------------------------------------------------------------------------
# systemd unit

def unit_settings(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) per assignment, in order (keys may repeat)."""
    section, settings = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), "line continuations make the unit harder to read; none expected"
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        settings.append((section, key.strip(), value.strip()))
    return settings


def unit_values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_settings(UNIT) if s == section and k == key]


def unit_value(key: str, section: str = "Service") -> str:
    values = unit_values(key, section)
    assert len(values) == 1, f"{key}= set {len(values)} times"
    return values[0]


def env_file(path: Path) -> dict[str, str]:
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"bad line {raw!r}"
            env[key] = value
    return env


def exec_start_argv() -> list[str]:
    return shlex.split(unit_value("ExecStart"))


def test_unit_runs_the_agent_as_a_user_with_only_the_capture_capabilities():
    argv = exec_start_argv()
    assert argv[0].startswith("/") and argv[1:4] == ["run", "--config", "/etc/egresswatch/egresswatch.toml"]
    # The agent clears its capabilities itself once the sockets are open: no --no-drop-privileges.
    assert "--no-drop-privileges" not in argv
    build_parser().parse_args(argv[1:])          # the agent's own command line accepts it
    assert unit_value("User") not in ("", "root", "0")
    assert set(unit_value("AmbientCapabilities").split()) == CAPTURE_CAPABILITIES
    assert set(unit_value("CapabilityBoundingSet").split()) == CAPTURE_CAPABILITIES
    assert unit_value("NoNewPrivileges") == "yes"


def test_unit_sandbox():
    assert unit_value("ProtectSystem") == "strict"
    assert unit_value("ProtectHome") == "yes"
    assert unit_value("PrivateTmp") == "yes"
    assert set(unit_value("ReadWritePaths").split()) == {"/var/log/egresswatch", "/var/lib/egresswatch",
                                                         "/var/cache/egresswatch"}
    assert unit_value("LogsDirectory") == "egresswatch" and unit_value("StateDirectory") == "egresswatch"
    # rule_cache and ledger "auto" (the defaults) use the directories systemd makes for the
    # service ($CACHE_DIRECTORY, $STATE_DIRECTORY): nothing in the environment overrides the file.
    assert unit_value("CacheDirectory") == "egresswatch" and unit_value("CacheDirectoryMode") == "0700"
    assert not [v for v in unit_values("Environment") if "RULE_CACHE" in v or "LEDGER" in v]
    assert set(unit_value("RestrictAddressFamilies").split()) == {"AF_PACKET", "AF_INET", "AF_INET6", "AF_UNIX",
                                                                 "AF_NETLINK"}
    assert unit_values("SystemCallFilter")[0] == "@system-service"
    assert unit_value("SystemCallArchitectures") == "native"
    assert unit_value("MemoryDenyWriteExecute") == "yes"
    assert re.fullmatch(r"\d+[KMGT]?", unit_value("MemoryMax"))
    assert unit_value("Restart") == "on-failure"
    assert unit_value("RestartPreventExitStatus") == "2"     # usage errors: the agent exits 2
    assert shlex.split(unit_value("ExecReload"))[1:] == ["-HUP", "$MAINPID"]
    assert unit_value("KillMode") == "mixed"


@pytest.mark.skipif(_tool("systemd-analyze") is None, reason="systemd-analyze not installed (package systemd)")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path):
    # verify checks that ExecStart's program exists: point it at this installation's agent.
    program = Path(sys.executable).parent / "egresswatch"
    if not program.exists():
        pytest.skip(f"no egresswatch console script next to {sys.executable} (pip install the project)")
    unit = tmp_path / "egresswatch.service"
    unit.write_text(UNIT.read_text().replace(exec_start_argv()[0], str(program)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings: there must be none about this unit.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "egresswatch.service" in line]
    assert complaints == []
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    result = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=120)
    assert "Unknown key" in result.stderr            # the check above can see a bad unit


@pytest.mark.skipif(_tool("systemd-analyze") is None, reason="systemd-analyze not installed (package systemd)")
def test_unit_exposure_level():
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True,
                            text=True, timeout=120)
    if "--offline" in result.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd 250 or later")
    match = re.search(r"Overall exposure level for egresswatch\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    # 2.1 with this unit; the rest is the network access a network sensor needs.
    assert float(match.group(1)) <= 2.5, result.stdout


def test_unit_and_env_file_make_a_valid_live_config():
    env = env_file(ENV_FILE)
    config = load(str(DEPLOY / "egresswatch.toml"), env, {})
    assert config.capture.interface == env["EGRESSWATCH_INTERFACE"]
    assert config.capture.drop_privileges
    # EVE goes where the unit lets the agent write.
    assert Path(config.eve).parent == Path("/var/log/egresswatch")
    assert config.metrics.port == MetricsListen().port == 9917
    commented = [line[1:].strip() for line in ENV_FILE.read_text().splitlines() if line.startswith("#EGRESSWATCH_")]
    assert commented, "the optional settings are shown commented out"
    load(str(DEPLOY / "egresswatch.toml"), env | env_file_from_lines(commented), {})


def env_file_from_lines(lines: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines)


# ---------------------------------------------------------------------------------------------
# Running the agent the way the artefacts do (root; namespaces made here, removed after).

def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


@pytest.fixture
def veth_pair() -> Iterator[tuple[str, str, str, str]]:
    tag = f"ewd{os.getpid() % 100000}"
    inside, outside = f"{tag}a", f"{tag}b"
    _run("ip", "netns", "add", inside)
    _run("ip", "netns", "add", outside)
    try:
        _run("ip", "link", "add", f"{tag}a0", "netns", inside, "type", "veth", "peer", "name", f"{tag}b0",
             "netns", outside)
        for namespace, link in ((inside, "lo"), (inside, f"{tag}a0"), (outside, f"{tag}b0")):
            _run("ip", "-n", namespace, "link", "set", link, "up")
        yield inside, f"{tag}a0", outside, f"{tag}b0"
    finally:
        subprocess.run(["ip", "netns", "del", inside], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", outside], capture_output=True, timeout=30)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged agent can read (pytest's tmp_path is under a root-only one),
    with `out/` owned by the agent's user (uid 65534) for what it writes."""
    path = Path(tempfile.mkdtemp(prefix="egresswatch-deploy-"))
    path.chmod(0o755)
    (path / "out").mkdir()
    os.chown(path / "out", 65534, 65534)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unprivileged_python(directory: Path) -> Path:
    """A virtualenv with its own copy of a CPython 3.11 interpreter (like the image's `venv
    --copies`) that an unprivileged user can run, importing this checkout and its dependencies."""
    site_packages = sysconfig.get_paths()["purelib"]
    # A system interpreter first: one under a private home (pyenv) may not be reachable by nobody.
    bases = ("/usr/local/bin/python3.11", "/usr/bin/python3.11", getattr(sys, "_base_executable", ""))
    for index, base in enumerate(bases):
        if not base or not os.path.exists(base):
            continue
        venv = directory / f"venv{index}"
        made = subprocess.run([base, "-m", "venv", "--copies", "--without-pip", str(venv)], capture_output=True,
                              timeout=120)
        if made.returncode != 0:
            continue
        purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        own = Path(subprocess.run([str(venv / "bin" / "python"), "-c", purelib], capture_output=True, text=True,
                                  timeout=60).stdout.strip())
        (own / "egresswatch-under-test.pth").write_text(f"import site; site.addsitedir({site_packages!r})\n")
        subprocess.run(["chmod", "-R", "a+rX", str(directory)], check=True, timeout=60)
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                                "--bounding-set=-all", str(venv / "bin" / "python"), "-I", "-c",
                                "import sys, agent.cli, hyperscan; assert sys.version_info[:2] == (3, 11)"],
                               capture_output=True, timeout=120)
        if probe.returncode == 0:
            return venv / "bin" / "python"
    pytest.skip("no CPython 3.11 interpreter that an unprivileged user can run with this checkout's packages")


def _wait_for(predicate: Callable[[], bool], seconds: float = 60.0) -> None:
    wait_for(predicate, seconds)


def _in_netns(namespace: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60)


def _listening(namespace: str, port: int) -> bool:
    return _in_netns(namespace, f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)").returncode == 0


def _scrape(namespace: str, port: int) -> dict[str, float]:
    result = _in_netns(namespace, f"import urllib.request; print(urllib.request.urlopen("
                                  f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())")
    assert result.returncode == 0, result.stderr
    return {s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in text_string_to_metric_families(result.stdout) for s in family.samples}


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _stop(agent: subprocess.Popen, started: list[int]) -> None:
    """After a failure: kill what this test started (strace leaves its tracees running when it is
    killed, and they hold the output pipes)."""
    if agent.poll() is None or any(Path(f"/proc/{pid}").exists() for pid in started):
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        agent.kill()
        agent.communicate(timeout=60)


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mdwe_supported() -> bool:
    """PR_SET_MDWE (Linux 6.3+) gives the same W^X rule as MemoryDenyWriteExecute=yes; try it in a
    child so this process stays unaffected."""
    code = "import ctypes, sys; sys.exit(ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


_MDWE_EXEC = ("import ctypes, os, sys\n"
              "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0: sys.exit('PR_SET_MDWE failed')\n"
              "os.execvp(sys.argv[1], sys.argv[1:])\n")


def _syscall_group(name: str, cache: dict[str, set[str]]) -> set[str]:
    """The system calls in a systemd group such as @system-service, nested groups expanded."""
    if name not in cache:
        listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                                 check=True, timeout=60).stdout.splitlines()[1:]
        members: set[str] = set()
        for line in listing:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            members |= _syscall_group(entry, cache) if entry.startswith("@") else {entry}
        cache[name] = members
    return cache[name]


def unit_syscall_allow_list() -> set[str]:
    """SystemCallFilter= lines merged as systemd does: an allow list first, then `~` removes
    and plain entries add."""
    lines = unit_values("SystemCallFilter")
    assert not lines[0].startswith("~"), "the first SystemCallFilter= is an allow list"
    cache: dict[str, set[str]] = {}
    allowed: set[str] = set()
    for line in lines:
        deny = line.startswith("~")
        for entry in line.lstrip("~").split():
            names = _syscall_group(entry, cache) if entry.startswith("@") else {entry}
            allowed = allowed - names if deny else allowed | names
    return allowed


def _replay_expected(directory: Path) -> list[dict]:
    replayed = directory / "replay.json"
    subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(SAMPLE), "--eve", str(replayed), "-q"],
                   check=True, timeout=300, cwd=PROJECT_ROOT)
    return _events(replayed)


@needs_root
@pytest.mark.skipif(not all(map(_tool, ("ip", "setpriv", "tcpreplay", "strace", "systemd-analyze"))),
                    reason="needs ip, setpriv, tcpreplay, strace and systemd-analyze")
def test_unit_privilege_model_captures_and_stays_inside_the_syscall_filter(veth_pair, shared_dir: Path):
    """The agent started as the unit starts it: ExecStart's arguments, the environment file, a
    non-root user (`nobody` standing in for `egresswatch`), the unit's ambient capabilities and
    bounding set, no_new_privs, W^X when the kernel can enforce it. Every system call it makes,
    through capture, SIGHUP and SIGTERM, must be one the unit's SystemCallFilter allows."""
    inside, inside_if, outside, outside_if = veth_pair
    python = unprivileged_python(shared_dir)
    expected = _replay_expected(shared_dir)
    eve, trace, port = shared_dir / "out" / "eve.json", shared_dir / "out" / "strace.txt", 9917
    env = {"PATH": os.environ["PATH"], "EGRESSWATCH_STRICT": "1", **env_file(ENV_FILE),
           "EGRESSWATCH_INTERFACE": inside_if, "EGRESSWATCH_EVE": str(eve), "EGRESSWATCH_WORKERS": "2",
           "EGRESSWATCH_METRICS_LISTEN": f"127.0.0.1:{port}"}
    argv = exec_start_argv()
    argv[argv.index("/etc/egresswatch/egresswatch.toml")] = str(DEPLOY / "egresswatch.toml")
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in unit_value("AmbientCapabilities").split())
    bounding = ",".join("+" + c.removeprefix("CAP_").lower() for c in unit_value("CapabilityBoundingSet").split())
    sandbox = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps=-all,{caps}",
               f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{bounding}"]
    if unit_value("NoNewPrivileges") == "yes":
        sandbox.append("--no-new-privs")
    mdwe = _mdwe_supported() and unit_value("MemoryDenyWriteExecute") == "yes"
    wrapper = [sys.executable, "-c", _MDWE_EXEC] if mdwe else []
    command = ["ip", "netns", "exec", inside, *wrapper, *sandbox, "strace", "-f", "-qq", "-o", str(trace),
               str(python), "-I", "-m", "agent.cli", *argv[1:]]
    agent = subprocess.Popen(command, cwd=shared_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    started: list[int] = []                           # the agent's processes, under strace
    try:
        _wait_for(lambda: agent.poll() is not None or _listening(inside, port), 120)
        assert agent.poll() is None, agent.communicate(timeout=60)[1]
        supervisor = _children(agent.pid)[0]          # strace's one child
        started.append(supervisor)
        _wait_for(lambda: len(_children(supervisor)) == 2)
        started += _children(supervisor)
        for pid in started:
            held = privileges.current(pid)
            assert held.uid == 65534 and held.effective_caps == 0 and held.permitted_caps == 0, held
            assert held.no_new_privs
        sent = subprocess.run(["ip", "netns", "exec", outside, "tcpreplay", "-q", "-i", outside_if, "--pps", "2000",
                               str(SAMPLE)], capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        alerts = sum(e["event_type"] == "alert" for e in expected)
        _wait_for(lambda: sum(e["event_type"] == "alert" for e in _events(eve)) == alerts)
        # Counters reach /metrics with the workers' next snapshot (about once a second).
        _wait_for(lambda: _scrape(inside, port)["egresswatch_capture_packets_total{}"] >= _sample_frames())
        # ExecReload: logrotate moves the file away, SIGHUP makes the agent open a new one.
        rotated = shared_dir / "out" / "eve.json.1"
        eve.rename(rotated)
        os.kill(supervisor, signal.SIGHUP)
        _wait_for(eve.exists)
        os.kill(supervisor, signal.SIGTERM)
        _, stderr = agent.communicate(timeout=120)
    finally:
        _stop(agent, started)
    assert agent.returncode == 0, stderr
    assert "Traceback" not in stderr
    live = _events(rotated) + _events(eve)
    assert Counter(e["event_type"] for e in live) == Counter(e["event_type"] for e in expected)
    used = {m.group(1) for m in re.finditer(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", trace.read_text(), re.M)}
    assert {"socket", "setsockopt", "mmap", "capset", "poll"} <= used     # the trace saw the capture
    assert used - unit_syscall_allow_list() == set()


@pytest.mark.skipif(not _mdwe_supported(), reason="kernel without PR_SET_MDWE (Linux < 6.3): cannot emulate "
                                                  "MemoryDenyWriteExecute=yes")
def test_agent_runs_with_write_xor_execute(tmp_path: Path):
    """MemoryDenyWriteExecute=yes in the unit: CPython, Hyperscan, libpcap (BPF compile) and the
    ctypes calls of the agent never need writable executable memory."""
    eve = tmp_path / "eve.json"
    code = ("import ctypes, sys\n"
            "assert ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) == 0\n"
            "from agent.capture.afpacket import compile_bpf\n"
            "assert len(compile_bpf('tcp port 443 and not net 192.0.2.0/24')) % 8 == 0\n"
            "from agent.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", code, "replay", str(SAMPLE), "--eve", str(eve), "-q"],
                            capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    assert sum(e["event_type"] == "alert" for e in _events(eve)) > 0


# ---------------------------------------------------------------------------------------------
# Container image

def containerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += (" " if pending else "") + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            pending = ""
    assert not pending, "dangling continuation"
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in containerfile_instructions(CONTAINERFILE):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _image_args() -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in containerfile_instructions(CONTAINERFILE) if k == "ARG" and "=" in a)


def test_containerfile_base_build_and_runtime_user():
    args = _image_args()
    stages = _stages()
    assert len(stages) == 2, "a build stage and a runtime stage"
    for stage in stages:
        base = stage[0][1].split()[0]
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert base == "python:3.11-slim-bookworm"
    final = stages[-1]
    users = [a for k, a in final if k == "USER"]
    assert len(users) == 1 and users[0].split(":")[0].isdigit() and int(users[0].split(":")[0]) >= 1000
    useradd = next(a for k, a in final if k == "RUN" and "useradd" in a)
    assert f"--uid {users[0].split(':')[0]}" in useradd
    # Every COPY from the build context names something in this repository, and the packages
    # setuptools finds (pyproject's include list) are all copied in.
    copied = []
    for stage in stages:
        for keyword, a in stage:
            if keyword == "COPY" and not a.startswith("--from"):
                *sources, _ = a.split()
                copied += sources
    for source in copied:
        assert (PROJECT_ROOT / source).exists(), source
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= set(copied) and pyproject["project"]["readme"] in copied and "pyproject.toml" in copied
    for keyword, a in (i for stage in stages for i in stage):
        if keyword == "RUN" and "apt-get install" in a:
            assert "--no-install-recommends" in a and "rm -rf /var/lib/apt/lists" in a
    runtime_packages = " ".join(a for k, a in final if k == "RUN" and "apt-get install" in a)
    assert "libpcap0.8" in runtime_packages          # compile_bpf needs libpcap at run time
    exposed = [a for k, a in final if k == "EXPOSE"]
    assert exposed == [f"{MetricsListen().port}/tcp"]
    # The default ledger ("auto") lands in the state volume, which the agent's user owns.
    volumes = [json.loads(a) for k, a in final if k == "VOLUME"]
    state = next(a.split("=", 1)[1] for k, a in final if k == "ENV" and a.startswith("STATE_DIRECTORY="))
    assert volumes == [[state]] and f"-o egresswatch -g egresswatch -m 0750 {state}" in " ".join(
        a for k, a in final if k == "RUN")


def _entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    final = _stages()[-1]
    entrypoint = json.loads(next(a for k, a in final if k == "ENTRYPOINT"))
    cmd = json.loads(next(a for k, a in final if k == "CMD"))
    return entrypoint, cmd


def _setcap() -> tuple[str, str]:
    run = next(a for k, a in _stages()[-1] if k == "RUN" and "setcap " in a)
    match = re.search(r"setcap (\S+) (\S+)", run)
    assert match
    return match.group(1), match.group(2)


def test_containerfile_file_capabilities_are_on_the_entrypoint_interpreter_only():
    entrypoint, cmd = _entrypoint_and_cmd()
    capabilities, target = _setcap()
    assert capabilities == "cap_net_raw,cap_net_admin+ep"
    assert entrypoint[0] == target                   # exec form, the interpreter that carries them
    assert entrypoint[1:] == ["-I", "-m", "agent.cli"]
    build = next(a for k, a in _stages()[0] if k == "RUN" and "venv" in a)
    assert "--copies" in build and target.startswith(build.split()[-1] + "/")   # its own copy, not /usr/local
    build_parser().parse_args(cmd)
    assert cmd[:1] == ["run"]


@needs_root
@pytest.mark.skipif(not all(map(_tool, ("ip", "setpriv", "setcap"))), reason="needs ip, setpriv and setcap "
                                                                            "(Debian package libcap2-bin)")
def test_container_privilege_model_file_capabilities(shared_dir: Path):
    """The image's way: a non-root user, the interpreter with file capabilities, a bounding set
    of the DaemonSet's capabilities.add, started as a runtime starts a non-root process (no
    capability held at exec: a shell without capabilities execs the entrypoint). The agent
    captures, then holds nothing. With no_new_privs (allowPrivilegeEscalation: false) the file
    capabilities do not count and the agent says so in one line: why the DaemonSet allows
    escalation."""
    python = unprivileged_python(shared_dir)
    capabilities, _ = _setcap()
    subprocess.run(["setcap", capabilities, str(python)], check=True, capture_output=True, timeout=60)
    container = _daemonset_container("egresswatch")
    added = ",".join("+" + c.lower() for c in container["securityContext"]["capabilities"]["add"])
    uid = str(_daemonset_pod_spec()["securityContext"]["runAsUser"])
    config = shared_dir / "egresswatch.toml"
    config.write_text(_configmap_toml())
    entrypoint, _ = _entrypoint_and_cmd()
    namespace = f"ewc{os.getpid() % 100000}"
    _run("ip", "netns", "add", namespace)
    try:
        _run("ip", "-n", namespace, "link", "set", "lo", "up")
        port = 9917
        env = {"PATH": os.environ["PATH"], "EGRESSWATCH_STRICT": "1", "EGRESSWATCH_INTERFACE": "lo",
               "EGRESSWATCH_METRICS_LISTEN": f"127.0.0.1:{port}"}
        base = ["ip", "netns", "exec", namespace, "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", f"--bounding-set=-all,{added}"]
        # setpriv itself still holds capabilities when it execs; the shell it starts holds none.
        agent_args = ["/bin/sh", "-c", 'exec "$0" "$@"', str(python), *entrypoint[1:], "run", "--config", str(config)]

        refused = subprocess.run([*base, "--no-new-privs", *agent_args], cwd=shared_dir, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2
        assert "CAP_NET_RAW" in refused.stderr.strip().splitlines()[-1]

        agent = subprocess.Popen([*base, *agent_args], cwd=shared_dir, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        workers: list[int] = []
        try:
            _wait_for(lambda: agent.poll() is not None or _listening(namespace, port), 120)
            assert agent.poll() is None, agent.communicate(timeout=60)[1]
            _wait_for(lambda: len(_children(agent.pid)) == 2)
            workers = _children(agent.pid)
            assert len(workers) == 2                   # workers = 2 in the ConfigMap
            for pid in [agent.pid, *workers]:
                held = privileges.current(pid)
                assert held.uid == int(uid) and held.effective_caps == 0 and held.permitted_caps == 0, held
                assert held.no_new_privs and held.bounding_caps == (1 << CAP_NET_ADMIN_BIT) | (1 << CAP_NET_RAW_BIT)
            assert "egresswatch_capture_packets_total{}" in _scrape(namespace, port)
            os.kill(agent.pid, signal.SIGTERM)
            _, stderr = agent.communicate(timeout=120)
        finally:
            _stop(agent, workers)
        assert agent.returncode == 0, stderr
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


# ---------------------------------------------------------------------------------------------
# Kubernetes

def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _daemonset() -> dict:
    return next(d for d in _documents(DAEMONSET) if d["kind"] == "DaemonSet")


def _daemonset_pod_spec() -> dict:
    return _daemonset()["spec"]["template"]["spec"]


def _daemonset_container(name: str) -> dict:
    return next(c for c in _daemonset_pod_spec()["containers"] if c["name"] == name)


def _configmap_toml() -> str:
    configmap = next(d for d in _documents(CONFIGMAP) if d["kind"] == "ConfigMap")
    return configmap["data"]["egresswatch.toml"]


def test_daemonset_security_properties():
    daemonset = _daemonset()
    pod = _daemonset_pod_spec()
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 1000
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"operator": "Exists"} in pod["tolerations"]          # every node, tainted ones too
    template_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    agent = _daemonset_container("egresswatch")
    security = agent["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN"]}
    assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
    assert security.get("privileged", False) is False
    # File capabilities need escalation allowed (see the container test); bounded by the above.
    assert security["allowPrivilegeEscalation"] is True
    assert {"cpu", "memory"} <= agent["resources"]["requests"].keys() and "memory" in agent["resources"]["limits"]
    build_parser().parse_args(agent["args"])
    # The only root step: chown of the hostPath spool, with CAP_CHOWN and nothing else.
    for init in pod.get("initContainers", []):
        init_security = init["securityContext"]
        assert init_security["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
        assert init_security["allowPrivilegeEscalation"] is False and init_security["readOnlyRootFilesystem"] is True
        assert init["command"][0] == "chown"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    assert "configMap" in volumes[mounts["/etc/egresswatch"]]
    spool = volumes[mounts["/var/lib/egresswatch"]]
    assert "hostPath" in spool or "emptyDir" in spool
    assert pod["terminationGracePeriodSeconds"] >= 60              # time to flush every open flow
    images = {c["image"] for c in pod["containers"] + pod.get("initContainers", [])}
    assert len(images) == 1


def _daemonset_env() -> dict[str, str]:
    """The agent container's environment as the kubelet expands it, with a node address."""
    values: dict[str, str] = {}
    for item in _daemonset_container("egresswatch")["env"]:
        if "valueFrom" in item:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
            values[item["name"]] = "198.51.100.7"
        else:
            values[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], item["value"])
    return values


def test_configmap_is_a_valid_agent_config_and_metrics_match_the_scrape_annotations(tmp_path: Path):
    path = tmp_path / "egresswatch.toml"
    path.write_text(_configmap_toml())
    config = load(str(path), _daemonset_env(), {})
    assert config.capture.interface and config.eve == "-" and config.workers >= 1
    annotations = _daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert (config.metrics.host, config.metrics.port) == ("198.51.100.7", int(annotations["prometheus.io/port"]))
    ports = {p["name"]: p["containerPort"] for p in _daemonset_container("egresswatch")["ports"]}
    assert ports["metrics"] == config.metrics.port
    assert _daemonset_container("egresswatch")["livenessProbe"]["httpGet"]["port"] == "metrics"


def test_prometheus_example_kubernetes_job_keeps_the_daemonset_pods():
    """The (commented) Kubernetes scrape job: its relabelling applied to the DaemonSet's pod."""
    text = PROMETHEUS_EXAMPLE.read_text()
    block = text.split("# --- kubernetes ---\n")[1].split("# --- end kubernetes ---")[0]
    job = yaml.safe_load("\n".join(line.replace("  # ", "", 1) for line in block.splitlines()))[0]
    template = _daemonset()["spec"]["template"]
    name = template["metadata"]["labels"]["app.kubernetes.io/name"]
    labels = {"__address__": "198.51.100.7", "__meta_kubernetes_pod_label_app_kubernetes_io_name": name}
    for key, value in template["metadata"]["annotations"].items():
        labels["__meta_kubernetes_pod_annotation_" + re.sub(r"[^A-Za-z0-9_]", "_", key)] = value
    for rule in job["relabel_configs"]:
        source = ";".join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), source)
        if rule.get("action") == "keep":
            assert match, f"the DaemonSet pod is dropped by {rule}"
        elif match:
            replacement = re.sub(r"\$(\d+)", r"\\\1", rule.get("replacement", "$1"))
            labels[rule["target_label"]] = match.expand(replacement)
    assert labels["__address__"] == "198.51.100.7:9917"
    assert labels["__metrics_path__"] == "/metrics" and labels["job"] == "egresswatch"


# ---------------------------------------------------------------------------------------------
# Prometheus rules

def _alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.mark.skipif(_tool("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_rules_pass_promtool_check_and_unit_tests():
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(["promtool", "test", "rules", RULES_TEST.name], capture_output=True, text=True,
                            timeout=300, cwd=RULES_TEST.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = subprocess.run(["promtool", "check", "config", PROMETHEUS_EXAMPLE.name], capture_output=True,
                            text=True, timeout=120, cwd=PROMETHEUS_EXAMPLE.parent)
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    names = {rule["alert"] for rule in _alert_rules()}
    assert names == {"EgresswatchCaptureDropsHigh", "EgresswatchSensitiveDataCrossBorder",
                     "EgresswatchSinkDroppingEvents", "EgresswatchSinkQueueGrowing",
                     "EgresswatchGeoipDatabaseStale", "EgresswatchAgentDown", "EgresswatchWorkerSaturated",
                     "EgresswatchEveWriteFailing"}
    cases = [case for test in yaml.safe_load(RULES_TEST.read_text())["tests"] for case in test["alert_rule_test"]]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fired == names and quiet == names


def test_alerts_have_annotations_a_runbook_section_and_bounded_labels(exposed: dict[str, set[str]]):
    readme = README.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning")
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"]
        anchor = re.match(r"deploy/README\.md#([\w-]+)", annotations["runbook"])
        assert anchor and anchor.group(1) in anchors, f"{rule['alert']}: runbook section missing in deploy/README.md"
    _check_references([rule["expr"] for rule in _alert_rules()], exposed, METRICS | {"up"},
                      DASHBOARD_LABELS | {"instance"})


# ---------------------------------------------------------------------------------------------
# Grafana dashboard

def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _targets(dashboard: dict) -> list[dict]:
    return [t for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_dashboard_structure_and_datasource_variable():
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    boxes = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        for other in boxes:
            overlap = (grid["x"] < other["x"] + other["w"] and other["x"] < grid["x"] + grid["w"]
                       and grid["y"] < other["y"] + other["h"] and other["y"] < grid["y"] + grid["h"])
            assert not overlap, f"panels overlap: {panel['title']}"
        boxes.append(grid)
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
            assert panel["targets"]
    for target in _targets(dashboard):
        assert target["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    assert "${DS_PROMETHEUS}" in DASHBOARD.read_text() and '"uid": "P' not in DASHBOARD.read_text()


def test_dashboard_uses_only_agent_metrics_and_no_address_labels(exposed: dict[str, set[str]]):
    targets = _targets(_dashboard())
    _check_references([t["expr"] for t in targets], exposed, METRICS | PROCESS_METRICS | {"up"}, DASHBOARD_LABELS)
    for target in targets:
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert legend_labels <= DASHBOARD_LABELS, target["legendFormat"]
    used = set().union(*(promql_names(t["expr"])[0] for t in targets))
    assert {"egresswatch_capture_packets_total", "egresswatch_capture_kernel_drops_total", "egresswatch_flows_active",
            "egresswatch_egress_bytes_total", "egresswatch_flows_total", "egresswatch_classified_values_total",
            "egresswatch_alerts_total", "egresswatch_sink_queue_depth", "egresswatch_sink_dropped_events_total",
            "egresswatch_geoip_database_build_timestamp_seconds"} <= used


@pytest.mark.skipif(_tool("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_dashboard_queries_are_valid_promql(tmp_path: Path):
    grafana = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m", "$job": "egresswatch"}
    rules = []
    for index, target in enumerate(_targets(_dashboard())):
        expr = target["expr"]
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, target["expr"]
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_describes_every_artefact():
    readme = README.read_text()
    for path in (UNIT, ENV_FILE, CONTAINERFILE, DAEMONSET, CONFIGMAP, RULES, RULES_TEST, PROMETHEUS_EXAMPLE, DASHBOARD):
        assert str(path.relative_to(DEPLOY)) in readme, path
    assert "ethtool -K" in readme and "gro off" in readme and "lro off" in readme
    # No path of the machine the files were written on: the checkout, or the writer's home.
    text = "".join(p.read_text() for p in DEPLOY.rglob("*") if p.is_file())
    assert str(PROJECT_ROOT) not in text and str(Path.home()) not in text

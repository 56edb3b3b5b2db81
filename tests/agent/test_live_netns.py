"""The live agent end to end, in a pair of network namespaces the test makes (veth between them).

egresswatch runs in namespace A on its veth end, as root dropping to `nobody`; tcpreplay sends
the bundled sample capture (personal data going abroad) into namespace B's end. The test then
reads the alerts in the EVE file, the counters on /metrics (scraped inside namespace A), checks
the privileges the processes hold, rotates the EVE file with SIGHUP, and stops the agent with
SIGTERM: it must exit 0 with every flow flushed, i.e. the same flow and alert events as a
replay of the same capture.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from agent import privileges
from tests.streams import PROJECT_ROOT, wait_for

SAMPLE = PROJECT_ROOT / "samples" / "sample-egress.pcap"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces (ip netns, veth)"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 (ip netns)"),
    pytest.mark.skipif(shutil.which("tcpreplay") is None, reason="needs tcpreplay (Debian package tcpreplay)"),
]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns_pair():
    tag = f"ew{os.getpid() % 100000}"
    inside, outside = f"{tag}a", f"{tag}b"
    _ip("netns", "add", inside)
    _ip("netns", "add", outside)
    try:
        _ip("link", "add", f"{tag}a0", "netns", inside, "type", "veth", "peer", "name", f"{tag}b0", "netns", outside)
        _ip("-n", inside, "link", "set", "lo", "up")
        _ip("-n", inside, "link", "set", f"{tag}a0", "up")
        _ip("-n", outside, "link", "set", f"{tag}b0", "up")
        yield inside, f"{tag}a0", outside, f"{tag}b0"
    finally:
        subprocess.run(["ip", "netns", "del", inside], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", outside], capture_output=True, timeout=30)


def _in_netns(namespace: str, *command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", namespace, *command], capture_output=True, text=True,
                          timeout=120, **kwargs)


def _scrape(namespace: str, port: int) -> dict[str, float]:
    code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode())"
    result = _in_netns(namespace, sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    samples = {}
    for line in result.stdout.splitlines():
        if line.startswith("egresswatch_"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _wait_for(predicate, seconds: float = 20.0) -> None:
    wait_for(predicate, seconds)


def _events(*paths: Path) -> list[dict]:
    events = []
    for path in paths:
        if path.exists():
            events += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return events


def _summary(events: list[dict]) -> Counter:
    """What must match between live and replay: per event type, app protocol, direction and the
    classification counts (timestamps and flow ids differ: the live clock is the receive time)."""
    keys = Counter()
    for event in events:
        matches = tuple((m["class"], m["count"]) for m in event.get("classification", {}).get("matches", []))
        keys[(event["event_type"], event.get("app_proto"), event.get("direction"), event["dest_port"], matches)] += 1
    return keys


@pytest.fixture
def shared_dir():
    """A directory `nobody` can reach (pytest's own tmp_path sits under a root-only directory):
    the agent reopens its EVE file there after dropping privileges."""
    path = Path(tempfile.mkdtemp(prefix="egresswatch-live-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_live_capture_alerts_metrics_privileges_and_clean_shutdown(netns_pair, shared_dir: Path):
    inside, inside_if, outside, outside_if = netns_pair
    tmp_path = shared_dir
    eve = tmp_path / "eve.json"
    replayed = tmp_path / "replay.json"
    subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(SAMPLE), "--eve", str(replayed), "-q"],
                   check=True, timeout=120, cwd=PROJECT_ROOT)
    expected = _events(replayed)
    from agent.config import Config
    from agent.pipeline import Pipeline, open_captures
    from agent.stats import Stats
    replay_stats = Stats()
    Pipeline(Config(), [], replay_stats).replay(open_captures([str(SAMPLE)]))
    port = 9917
    agent = subprocess.Popen(
        ["ip", "netns", "exec", inside, sys.executable, "-m", "agent.cli", "run", "--interface", inside_if,
         "--workers", "2", "--eve", str(eve), "--metrics-listen", f"127.0.0.1:{port}", "--user", "nobody",
         "--ledger", str(tmp_path / "ledger.msgpack")],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "EGRESSWATCH_STRICT": "1"})
    try:
        _wait_for(lambda: _in_netns(inside, sys.executable, "-c",
                                    f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)").returncode == 0)
        # Privileges: the supervisor and both workers run as nobody with no capabilities left.
        def agent_pids() -> list[int]:
            return [int(p) for p in subprocess.run(["pgrep", "-f", f"agent.cli run --interface {inside_if} "],
                                                   capture_output=True, text=True).stdout.split()]
        _wait_for(lambda: len(agent_pids()) == 3)
        held = [privileges.current(pid) for pid in agent_pids()]
        assert all(h.uid == 65534 and h.effective_caps == 0 and h.permitted_caps == 0 and h.no_new_privs
                   for h in held)

        sent = _in_netns(outside, "tcpreplay", "-q", "-i", outside_if, "--pps", "2000", str(SAMPLE))
        assert sent.returncode == 0, sent.stderr
        _wait_for(lambda: _scrape(inside, port).get("egresswatch_capture_packets_total", 0) >= replay_stats.packets)
        # Alerts are written as soon as a flow is known to match, before any flow ends.
        _wait_for(lambda: sum(e["event_type"] == "alert" for e in _events(eve)) ==
                  sum(e["event_type"] == "alert" for e in expected))
        metrics = _scrape(inside, port)
        assert metrics["egresswatch_capture_kernel_drops_total"] == 0
        assert metrics["egresswatch_flows_active"] == replay_stats.flows     # none has timed out yet
        # Each worker reports its own CPU time and memory (process_* is the supervisor's only).
        for worker in ("0", "1"):
            assert metrics[f'egresswatch_worker_cpu_seconds_total{{worker="{worker}"}}'] > 0
            assert metrics[f'egresswatch_worker_resident_memory_bytes{{worker="{worker}"}}'] > 10 * 2**20
        for (class_id, severity), count in replay_stats.alerts_by.items():
            assert metrics[f'egresswatch_alerts_total{{class="{class_id}",severity="{severity}"}}'] == count

        # logrotate: move the file away, SIGHUP, and the events that follow go to a new file.
        rotated = tmp_path / "eve.json.1"
        eve.rename(rotated)
        os.kill(agent.pid, signal.SIGHUP)     # `ip netns exec` execs the agent in place
        _wait_for(lambda: eve.exists())

        os.kill(agent.pid, signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, stderr
    assert "Traceback" not in stderr
    live = _events(rotated, eve)
    assert _summary(live) == _summary(expected)
    assert {e["flow"]["reason"] for e in _events(eve) if e["event_type"] == "flow"} == {"shutdown"}
    # The year's counts were written at the stop, by the unprivileged agent, readable by it alone.
    from geo.ledger import LedgerFile
    ledger_path = tmp_path / "ledger.msgpack"
    assert ledger_path.stat().st_uid == 65534 and ledger_path.stat().st_mode & 0o077 == 0
    _, kept = LedgerFile(str(ledger_path)).load()
    years = replay_stats.ledger.years()
    assert years and kept.years() == years
    for year in years:
        for classes in (["cn_resident_id"], ["cn_mobile", "email"]):
            live_persons, replay_persons = kept.persons(year, classes), replay_stats.ledger.persons(year, classes)
            assert abs(live_persons - replay_persons) <= max(2, replay_persons // 30), (classes, live_persons)


def test_run_without_interface_or_privileges_is_a_one_line_error(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "agent.cli", "run"], capture_output=True, text=True,
                            timeout=60, cwd=PROJECT_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "egresswatch: error: no capture interface: give --interface IF (or [capture] interface)"
    result = subprocess.run([sys.executable, "-m", "agent.cli", "run", "-i", "no-such-if0"], capture_output=True,
                            text=True, timeout=60, cwd=PROJECT_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "egresswatch: error: no such network interface: no-such-if0"
    result = subprocess.run([sys.executable, "-m", "agent.cli", "run", "-i", "lo", "--user", "no-such-user-x"],
                            capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "egresswatch: error: --user no-such-user-x: no such user"
    result = subprocess.run([sys.executable, "-m", "agent.cli", "run", "-i", "lo", "--bpf", "tcp port"],
                            capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert result.returncode == 2
    assert "bad --bpf expression" in result.stderr.strip().splitlines()[-1]

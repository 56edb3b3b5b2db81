"""A real Prometheus (Debian package) scrapes the live agent and evaluates the shipped rules.

The agent captures on the loopback interface of a network namespace the test creates (so it
sees nothing of the host), serves /metrics there, and Prometheus runs in the same namespace
with deploy/prometheus/egresswatch-rules.yml. The test checks that the scrape is up, that the
agent's series are stored, and that the GeoIP staleness rule is in the state the embedded
database's age calls for (pending/firing when it is older than 90 days, absent otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.streams import PROJECT_ROOT, wait_for

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "egresswatch-rules.yml"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace and AF_PACKET"),
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs the Debian package prometheus"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 (ip netns)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _query(namespace: str, port: int, path: str) -> dict:
    code = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
            f"'http://127.0.0.1:{port}{path}', timeout=5).read().decode())")
    result = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=30)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def _wait_for(predicate, seconds: float = 45.0):
    return wait_for(predicate, seconds, interval=0.5)


@pytest.fixture
def namespace():
    name = f"ewp{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def test_prometheus_scrapes_the_agent_and_evaluates_the_rules(namespace, tmp_path: Path):
    from geo import STALE_AFTER_DAYS
    from geo.resolver import embedded_age_days

    metrics_port, prometheus_port = _free_port(), _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: egresswatch
    static_configs: [{{targets: ["127.0.0.1:{metrics_port}"]}}]
""")
    agent = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "agent.cli", "run", "--interface", "lo",
         "--no-promiscuous", "--eve", str(tmp_path / "eve.json"), "--metrics-listen", f"127.0.0.1:{metrics_port}",
         "--no-drop-privileges"], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    prometheus = subprocess.Popen(
        ["ip", "netns", "exec", namespace, "prometheus", f"--config.file={config}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        up = _wait_for(lambda: [r for r in _query(namespace, prometheus_port, "/api/v1/query?query=up")
                                .get("data", {}).get("result", []) if r["value"][1] == "1"])
        assert up[0]["metric"]["job"] == "egresswatch"
        series = _wait_for(lambda: _query(namespace, prometheus_port,
                                          "/api/v1/query?query=egresswatch_build_info").get("data", {}).get("result"))
        assert series[0]["value"][1] == "1"
        rules = _query(namespace, prometheus_port, "/api/v1/rules")["data"]["groups"]
        evaluated = {rule["name"]: rule for group in rules for rule in group["rules"]}
        assert evaluated["EgresswatchGeoipDatabaseStale"]["health"] == "ok"
        age = embedded_age_days()
        assert age is not None
        if age[1] > STALE_AFTER_DAYS:
            alerts = _wait_for(lambda: [a for a in _query(namespace, prometheus_port, "/api/v1/alerts")
                                        .get("data", {}).get("alerts", [])
                                        if a["labels"]["alertname"] == "EgresswatchGeoipDatabaseStale"])
            assert alerts[0]["labels"]["database"] == "embedded"
            assert alerts[0]["state"] in ("pending", "firing")
        else:
            time.sleep(3)
            alerts = _query(namespace, prometheus_port, "/api/v1/alerts")["data"]["alerts"]
            assert not [a for a in alerts if a["labels"]["alertname"] == "EgresswatchGeoipDatabaseStale"]
        assert not [a for a in _query(namespace, prometheus_port, "/api/v1/alerts")["data"]["alerts"]
                    if a["labels"]["alertname"] == "EgresswatchAgentDown"]
    finally:
        prometheus.send_signal(signal.SIGTERM)
        agent.send_signal(signal.SIGTERM)
        prometheus.wait(timeout=30)
        _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0, stderr

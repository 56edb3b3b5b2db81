"""`egresswatch replay` end to end: exit codes, one-line errors, EVE contract, determinism."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from agent.cli import main
from tests.streams import PROJECT_ROOT

TS_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0000$")


def _http_flow(client="10.0.0.5", server="93.184.216.34", cport=41000, t0=1_767_225_600.0):
    req = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    pk = [
        Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=80, flags="S", seq=100),
        Ether() / IP(src=server, dst=client) / TCP(sport=80, dport=cport, flags="SA", seq=900, ack=101),
        Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=80, flags="A", seq=101, ack=901),
        Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=80, flags="PA", seq=101, ack=901) / req,
        Ether() / IP(src=server, dst=client) / TCP(sport=80, dport=cport, flags="PA", seq=901, ack=101 + len(req)) / resp,
        Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=80, flags="FA", seq=101 + len(req), ack=901 + len(resp)),
        Ether() / IP(src=server, dst=client) / TCP(sport=80, dport=cport, flags="FA", seq=901 + len(resp), ack=102 + len(req)),
    ]
    for i, p in enumerate(pk):
        p.time = t0 + i * 0.010
    return pk


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    packets = _http_flow()
    packets += _http_flow(client="10.0.0.6", server="10.0.0.7", cport=42000)        # domestic: no event
    dns = Ether() / IP(src="192.168.1.9", dst="114.114.114.114") / UDP(sport=53000, dport=53) / DNS(qd=DNSQR(qname="example.test"))
    dns.time = 1_767_225_601.0
    packets.append(dns)
    path = tmp_path / "two.pcap"
    wrpcap(str(path), packets)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=120)


def test_replay_writes_flow_events_for_boundary_crossing_flows(capture: Path, tmp_path: Path):
    out = tmp_path / "eve.json"
    assert main(["replay", str(capture), "--eve", str(out), "--progress", "never"]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["src_ip"], e["dest_ip"], e["proto"]) for e in events] == [
        ("10.0.0.5", "93.184.216.34", "TCP"), ("192.168.1.9", "114.114.114.114", "UDP")]
    http = events[0]
    assert http["event_type"] == "flow" and http["app_proto"] == "http"
    assert isinstance(http["flow_id"], int)
    assert http["community_id"].startswith("1:")
    assert http["pcap_filename"] == str(capture)
    assert TS_FORMAT.match(http["timestamp"]) and TS_FORMAT.match(http["flow"]["start"])
    assert http["flow"]["pkts_toserver"] == 4 and http["flow"]["pkts_toclient"] == 3
    assert http["flow"]["state"] == "closed" and http["flow"]["reason"] == "shutdown"
    assert events[1]["app_proto"] == "dns"


def test_community_id_matches_the_published_v1_algorithm(capture: Path, tmp_path: Path):
    # Independent check with the reference vector from the Community ID spec repository:
    # TCP 128.232.110.120:34855 -> 66.35.250.204:80 is "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".
    from agent.events import community_id
    from agent.flows import Flow
    flow = Flow(b"", 6, 0, bytes([128, 232, 110, 120]), 34855, bytes([66, 35, 250, 204]), 80, 0, 0)
    assert community_id(flow) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def test_community_id_agrees_with_the_reference_package_on_random_tuples():
    import random

    import communityid

    from agent.events import community_id
    from agent.flows import Flow
    rng = random.Random(4)
    reference = communityid.CommunityID(seed=0)
    for _ in range(500):
        size = rng.choice((4, 16))
        a, b = rng.randbytes(size), rng.randbytes(size)
        if rng.random() < 0.1:
            b = a                                        # same address: ports decide the order
        proto, ap, bp = rng.choice((6, 17)), rng.randrange(65536), rng.randrange(65536)
        flow = Flow(b"", proto, 0, a, ap, b, bp, 0, 0)
        assert community_id(flow) == str(reference.calc(communityid.FlowTuple(proto, a, b, ap, bp)))


def test_output_is_byte_identical_across_runs(capture: Path, tmp_path: Path):
    outs = []
    for n in range(2):
        out = tmp_path / f"eve{n}.json"
        assert main(["replay", str(capture), "--eve", str(out), "-q"]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0]


def test_internal_override_changes_what_is_boundary_crossing(capture: Path, tmp_path: Path):
    out = tmp_path / "eve.json"
    assert main(["replay", str(capture), "--eve", str(out), "--internal", "10.0.0.6/32", "-q"]) == 0
    pairs = [(e["src_ip"], e["dest_ip"]) for e in map(json.loads, out.read_text().splitlines())]
    assert pairs == [("10.0.0.6", "10.0.0.7")]


@pytest.mark.parametrize("args, message", [
    (["replay", "/nonexistent/x.pcap"], "x.pcap"),
    (["replay", "{capture}", "--internal", "10.0.0.0/33"], "bad CIDR"),
    (["replay", "{capture}", "--internal", "not-a-net"], "bad CIDR"),
    (["replay", "{capture}", "--home", "China"], "--home"),
    (["replay", "{textfile}"], "not a pcap or pcapng capture"),
    (["replay", "{capture}", "--config", "/nonexistent.toml"], "config file not found"),
    (["replay", "{capture}", "--config", "{badconfig}"], "unknown option"),
    (["replay"], "PCAP"),
    (["bogus"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capture: Path, tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("just some text, not a capture\n" * 10)
    bad = tmp_path / "bad.toml"
    bad.write_text("[flows]\nmax_flow = 3\n")
    args = [a.format(capture=capture, textfile=text, badconfig=bad) for a in args]
    result = _run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("egresswatch: error:"), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_damaged_capture_reports_and_exits_0(capture: Path, tmp_path: Path):
    data = capture.read_bytes()
    damaged = tmp_path / "damaged.pcap"
    # Corrupt the 4th record's length field: claims 16 MiB.
    off = 24
    for _ in range(3):
        off += 16 + int.from_bytes(data[off + 8:off + 12], "little")
    damaged.write_bytes(data[:off + 8] + (16 << 20).to_bytes(4, "little") + data[off + 12:])
    out = tmp_path / "eve.json"
    result = _run("replay", str(damaged), "--eve", str(out))
    assert result.returncode == 0, result.stderr
    assert "damaged" in result.stderr and "Traceback" not in result.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(events) == 1 and events[0]["flow"]["pkts_toserver"] == 2


def test_summary_line_and_stdout_events(capture: Path):
    result = _run("replay", str(capture))
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 2
    assert re.search(r"\d+ packets, .* Mbit/s, .* packets/s\); 3 flows, 2 flow events", result.stderr)


def test_env_overrides_and_cli_beats_env(capture: Path, tmp_path: Path, monkeypatch):
    out_env, out_cli = tmp_path / "env.json", tmp_path / "cli.json"
    monkeypatch.setenv("EGRESSWATCH_EVE", str(out_env))
    monkeypatch.setenv("EGRESSWATCH_INTERNAL", "10.0.0.6/32")
    assert main(["replay", str(capture), "-q"]) == 0
    assert len(out_env.read_text().splitlines()) == 1
    assert main(["replay", str(capture), "-q", "--eve", str(out_cli), "--internal", "10.0.0.0/8,192.168.0.0/16"]) == 0
    assert len(out_cli.read_text().splitlines()) == 2


def test_help_is_useful():
    result = _run("replay", "--help")
    assert result.returncode == 0 and "--internal" in result.stdout and "examples" in result.stdout


def test_rules_list_names_every_builtin_class():
    result = _run("rules", "list")
    assert result.returncode == 0
    ids = [line.split()[0] for line in result.stdout.splitlines()]
    assert ids == ["cn_resident_id", "cn_mobile", "payment_card", "email", "cn_uscc", "iban", "cn_passport"]


def test_rules_test_prints_masked_values_only(tmp_path: Path):
    from stdnum.cn import ric
    body = "11010519800101123"
    rid = body + ric.calc_check_digit(body + "0")
    sample = tmp_path / "sample.txt"
    sample.write_text(f"姓名 张三 身份证 {rid}\n电话 13812345678\n")
    result = _run("rules", "test", str(sample))
    assert result.returncode == 0
    lines = sorted(line.split("\t")[1:] for line in result.stdout.splitlines())
    assert lines == [["cn_mobile", "high", "138****5678"], ["cn_resident_id", "high", rid[:6] + "********" + rid[-4:]]]
    assert rid not in result.stdout and "13812345678" not in result.stdout


def test_several_captures_in_one_run_name_their_files(capture: Path, tmp_path: Path):
    sample = PROJECT_ROOT / "samples" / "sample-egress.pcap"
    out = tmp_path / "eve.json"
    assert main(["replay", str(sample), str(capture), "--eve", str(out), "-q"]) == 0
    names = {e["pcap_filename"] for e in map(json.loads, out.read_text().splitlines())}
    assert names == {str(sample), str(capture)}


def test_gzip_compressed_capture_gives_the_same_events(capture: Path, tmp_path: Path):
    import gzip
    packed = tmp_path / "two.pcap.gz"
    packed.write_bytes(gzip.compress(capture.read_bytes()))
    plain_out, gz_out = tmp_path / "plain.json", tmp_path / "gz.json"
    assert main(["replay", str(capture), "--eve", str(plain_out), "-q"]) == 0
    assert main(["replay", str(packed), "--eve", str(gz_out), "-q"]) == 0
    strip = lambda text: [{k: v for k, v in json.loads(l).items() if k != "pcap_filename"} for l in text.splitlines()]
    assert strip(plain_out.read_text()) == strip(gz_out.read_text())


def test_the_command_flushes_everything_before_its_fast_exit(tmp_path: Path):
    """`egresswatch` ends with os._exit (no interpreter teardown): every EVE line on stdout, the
    summary on stderr and the exit status must still arrive whole."""
    sample = PROJECT_ROOT / "samples" / "sample-egress.pcap"
    to_file = tmp_path / "eve.json"
    assert main(["replay", str(sample), "--eve", str(to_file), "-q"]) == 0
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(sample), "--eve", "-"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert result.stdout.endswith("\n") and len(lines) == len(to_file.read_text().splitlines()) > 10
    assert all(json.loads(line)["event_type"] in ("flow", "alert") for line in lines)
    assert re.search(r"egresswatch: [\d,]+ packets", result.stderr)
    missing = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(tmp_path / "none.pcap")],
                             capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_the_eve_output_is_an_error_not_a_quiet_success(tmp_path: Path):
    sample = PROJECT_ROOT / "samples" / "sample-egress.pcap"
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(sample), "--eve", "-"],
                                stdout=full, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "egresswatch: error: cannot write EVE output -: No space left on device (output incomplete)"
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(sample), "--eve", "/dev/full"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 1 and "cannot write EVE output /dev/full" in result.stderr.splitlines()[-1]

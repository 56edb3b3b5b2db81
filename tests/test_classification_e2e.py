"""Captures built with scapy -> `egresswatch replay` -> alerts and exact distinct counts.

Values are synthetic and checksum-valid (python-stdnum computes the check digits); every test
also checks that no raw value appears in stdout, stderr or the events.
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap
from stdnum import luhn
from stdnum.cn import ric

from tests.streams import PROJECT_ROOT

# OUTSIDE is a public address (a documentation range would be special-purpose, never abroad).
INSIDE, OUTSIDE = "10.20.0.5", "93.184.216.34"


def rid(rng: random.Random) -> str:
    body = "110105" + f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}" + f"{rng.randint(0, 999):03d}"
    return body + ric.calc_check_digit(body + "0")


def card(rng: random.Random) -> str:
    body = "622202" + "".join(str(rng.randint(0, 9)) for _ in range(9))
    return body + luhn.calc_check_digit(body)


def mobile(rng: random.Random) -> str:
    return "13" + str(rng.randint(0, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(8))


def tcp_conversation(client: str, server: str, cport: int, to_server: list[bytes], to_client: list[bytes],
                     *, reorder: bool = False, t0: float = 1_767_225_600.0, port: int = 80) -> list:
    """Handshake, client segments (optionally out of order), server segments, FIN/FIN."""
    isn_c, isn_s = 1000, 90000
    pkts = [Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=port, flags="S", seq=isn_c),
            Ether() / IP(src=server, dst=client) / TCP(sport=port, dport=cport, flags="SA", seq=isn_s, ack=isn_c + 1),
            Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=port, flags="A", seq=isn_c + 1, ack=isn_s + 1)]
    seq = isn_c + 1
    client_pkts = []
    for data in to_server:
        client_pkts.append(Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=port, flags="PA", seq=seq,
                                                                     ack=isn_s + 1) / data)
        seq += len(data)
    if reorder:
        client_pkts = client_pkts[1::2] + client_pkts[0::2]
    pkts += client_pkts
    sseq = isn_s + 1
    for data in to_client:
        pkts.append(Ether() / IP(src=server, dst=client) / TCP(sport=port, dport=cport, flags="PA", seq=sseq, ack=seq) / data)
        sseq += len(data)
    pkts.append(Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=port, flags="FA", seq=seq, ack=sseq))
    pkts.append(Ether() / IP(src=server, dst=client) / TCP(sport=port, dport=cport, flags="FA", seq=sseq, ack=seq + 1))
    for i, p in enumerate(pkts):
        p.time = t0 + i * 0.001
    return pkts


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def post(body: bytes, content_type: str, extra: str = "") -> bytes:
    return (f"POST /upload HTTP/1.1\r\nHost: collect.example.net\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chunked_post(body: bytes, content_type: str, chunk: int, extra: str = "") -> bytes:
    out = [f"POST /upload HTTP/1.1\r\nHost: collect.example.net\r\nContent-Type: {content_type}\r\n{extra}"
           "Transfer-Encoding: chunked\r\n\r\n".encode()]
    for piece in split(body, chunk):
        out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def replay(tmp_path: Path, packets: list, *extra: str) -> tuple[list[dict], str]:
    pcap = tmp_path / "in.pcap"
    wrpcap(str(pcap), packets)
    out = tmp_path / "eve.json"
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(pcap), "--eve", str(out), *extra],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    return [json.loads(line) for line in text.splitlines()], text + result.stdout + result.stderr


def counts(event: dict) -> dict[str, int]:
    return {m["class"]: m["count"] for m in event.get("classification", {}).get("matches", [])}


def assert_no_raw(values: list[str], output: str) -> None:
    leaked = [v for v in values if v in output]
    assert not leaked, f"raw values in output: {leaked[:3]}"


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_multipart_csv_of_500_rows_gives_exact_distinct_counts(tmp_path):
    rng = random.Random(5)
    rows = [(rid(rng), mobile(rng), card(rng)) for _ in range(500)]
    rows += rows[:20]                                   # duplicates must not be counted twice
    csv = "id,mobile,card\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"staff.csv\"\r\n"
            b"Content-Type: text/csv\r\n\r\n" + csv.encode() + b"\r\n--XyZ--\r\n")
    request = post(body, "multipart/form-data; boundary=XyZ")
    events, output = replay(tmp_path, tcp_conversation(INSIDE, OUTSIDE, 40001, split(request, 1448), [OK]))
    alerts = [e for e in events if e["event_type"] == "alert"]
    flows = [e for e in events if e["event_type"] == "flow"]
    assert len(alerts) == 1 and alerts[0]["direction"] == "egress"
    expected = {"cn_resident_id": len({r[0] for r in rows}), "cn_mobile": len({r[1] for r in rows}),
                "payment_card": len({r[2] for r in rows})}
    assert counts(flows[0]) == expected
    assert flows[0]["classification"]["severity"] == 1          # sensitive classes in bulk
    assert_no_raw([v for r in rows for v in r], output)


def test_chunked_gzip_body_with_values_split_across_chunks_and_tiny_segments(tmp_path):
    rng = random.Random(6)
    values = [rid(rng) for _ in range(30)]
    body = gzip.compress(json.dumps({"people": [{"idno": v, "name": "张三"} for v in values]},
                                    ensure_ascii=True).encode())
    request = chunked_post(body, "application/json", chunk=7, extra="Content-Encoding: gzip\r\n")
    events, output = replay(tmp_path, tcp_conversation(INSIDE, OUTSIDE, 40002, split(request, 3), [OK], reorder=True))
    flow = [e for e in events if e["event_type"] == "flow"][0]
    assert counts(flow) == {"cn_resident_id": 30}
    assert_no_raw(values, output)


def test_form_body_with_percent_encoding_and_full_width_digits(tmp_path):
    rng = random.Random(7)
    value = rid(rng)
    full_width = value.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    from urllib.parse import quote_plus
    body = f"name={quote_plus('李 四')}&idno={quote_plus(full_width)}&tel=138+1234+5678".encode()
    request = post(body, "application/x-www-form-urlencoded")
    events, output = replay(tmp_path, tcp_conversation(INSIDE, OUTSIDE, 40003, [request], [OK]))
    flow = [e for e in events if e["event_type"] == "flow"][0]
    assert counts(flow) == {"cn_resident_id": 1, "cn_mobile": 1}
    assert_no_raw([value, "13812345678"], output)


def test_server_response_in_egress_flow_is_not_counted(tmp_path):
    rng = random.Random(8)
    values = [rid(rng) for _ in range(5)]
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n" % len(",".join(values)) \
        + ",".join(values).encode()
    request = b"GET /export.csv HTTP/1.1\r\nHost: x.example.net\r\n\r\n"
    events, _ = replay(tmp_path, tcp_conversation(INSIDE, OUTSIDE, 40004, [request], [response]))
    assert [e["event_type"] for e in events] == ["flow"]
    assert "classification" not in events[0]


def test_ingress_download_of_identity_numbers_raises_an_ingress_alert(tmp_path):
    rng = random.Random(9)
    values = [rid(rng) for _ in range(40)]
    csv = ("id\n" + "\n".join(values) + "\n").encode()
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n" % len(csv) + csv
    request = b"GET /export.csv HTTP/1.1\r\nHost: files.corp.example\r\n\r\n"
    # An outside client downloads from an inside server: the server's bytes leave the network.
    events, output = replay(tmp_path, tcp_conversation(OUTSIDE, INSIDE, 51000, [request], split(response, 1448)))
    alerts = [e for e in events if e["event_type"] == "alert"]
    assert len(alerts) == 1 and alerts[0]["direction"] == "ingress"
    assert counts([e for e in events if e["event_type"] == "flow"][0]) == {"cn_resident_id": 40}
    # The same CSV uploaded *into* the network (outside client -> inside server) raises nothing.
    upload = post(csv, "text/csv")
    events, _ = replay(tmp_path, tcp_conversation(OUTSIDE, INSIDE, 51001, [upload], [OK]))
    assert [e["event_type"] for e in events] == ["flow"]
    assert "classification" not in events[0]
    assert_no_raw(values, output)


def test_domestic_flow_raises_nothing(tmp_path):
    rng = random.Random(10)
    request = post(f"id={rid(rng)}".encode(), "application/x-www-form-urlencoded")
    events, _ = replay(tmp_path, tcp_conversation(INSIDE, "10.30.0.9", 40005, [request], [OK]))
    assert events == []


def test_alert_comes_before_the_flow_event_and_carries_counts_so_far(tmp_path):
    rng = random.Random(11)
    first = post(f"id={rid(rng)}".encode(), "application/x-www-form-urlencoded")
    second = post(f"id={rid(rng)}&id2={rid(rng)}".encode(), "application/x-www-form-urlencoded")
    events, _ = replay(tmp_path, tcp_conversation(INSIDE, OUTSIDE, 40006, [first, second], [OK, OK]))
    assert [e["event_type"] for e in events] == ["alert", "flow"]
    assert counts(events[0]) == {"cn_resident_id": 1}
    assert counts(events[1]) == {"cn_resident_id": 3}


@pytest.mark.parametrize("decoy", ["1732600000000", "202601014036666525", "4111111111111112"])
def test_decoys_raise_nothing(tmp_path, decoy):
    request = post(f"ts={decoy}&order={decoy}".encode(), "application/x-www-form-urlencoded")
    events, _ = replay(tmp_path, tcp_conversation(INSIDE, OUTSIDE, 40007, [request], [OK]))
    assert [e["event_type"] for e in events] == ["flow"]


def test_rule_pack_marking_in_gbk_upload_raises_a_core_alert(tmp_path):
    body = "标题：年度计划\n密级：绝密★长期\n".encode("gbk")
    request = post(body, "text/plain; charset=gbk")
    pack = PROJECT_ROOT / "deploy" / "rules" / "example-important-data.yaml"
    events, _ = replay(tmp_path, tcp_conversation(INSIDE, OUTSIDE, 40008, [request], [OK]), "--rules", str(pack))
    assert [e["event_type"] for e in events] == ["alert", "flow"]
    match = events[1]["classification"]["matches"][0]
    assert (match["class"], match["grade"], match["count"]) == ("state_secret_marking", "core", 1)
    assert events[0]["alert"]["severity"] == 1


def exchange(client: str, server: str, cport: int, sport: int, turns: list[tuple[int, bytes]],
             t0: float = 1_767_225_600.0) -> list:
    """A TCP connection carrying `turns` of (0 client | 1 server, bytes) in order."""
    seq = [1000, 90000]
    ends = [(client, cport), (server, sport)]
    pkts = [Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=sport, flags="S", seq=999),
            Ether() / IP(src=server, dst=client) / TCP(sport=sport, dport=cport, flags="SA", seq=89999, ack=1000),
            Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=sport, flags="A", seq=1000, ack=90000)]
    for side, data in turns:
        (src, sp), (dst, dp) = ends[side], ends[1 - side]
        for piece in split(data, 1448):
            pkts.append(Ether() / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags="PA", seq=seq[side],
                                                             ack=seq[1 - side]) / piece)
            seq[side] += len(piece)
    pkts.append(Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=sport, flags="FA", seq=seq[0], ack=seq[1]))
    pkts.append(Ether() / IP(src=server, dst=client) / TCP(sport=sport, dport=cport, flags="FA", seq=seq[1], ack=seq[0] + 1))
    for i, p in enumerate(pkts):
        p.time = t0 + i * 0.001
    return pkts


def test_smtp_base64_attachment_with_identity_numbers_alerts(tmp_path):
    import base64
    rng = random.Random(12)
    values = [rid(rng) for _ in range(25)]
    attachment = base64.encodebytes(("id\n" + "\n".join(values) + "\n").encode()).decode()
    message = ("From: hr@corp.example\r\nTo: agent@partner.example\r\nSubject: list\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
               "--b1\r\nContent-Type: text/csv\r\nContent-Transfer-Encoding: base64\r\n"
               "Content-Disposition: attachment; filename=ids.csv\r\n\r\n" + attachment + "--b1--\r\n.\r\n").encode()
    turns = [(1, b"220 mx.partner.example ESMTP\r\n"), (0, b"EHLO corp.example\r\n"), (1, b"250 OK\r\n"),
             (0, b"MAIL FROM:<hr@corp.example>\r\n"), (1, b"250 OK\r\n"), (0, b"RCPT TO:<agent@partner.example>\r\n"),
             (1, b"250 OK\r\n"), (0, b"DATA\r\n"), (1, b"354 go ahead\r\n"), (0, message), (1, b"250 queued\r\n"),
             (0, b"QUIT\r\n"), (1, b"221 bye\r\n")]
    events, output = replay(tmp_path, exchange(INSIDE, OUTSIDE, 40009, 25, turns))
    flow = [e for e in events if e["event_type"] == "flow"][0]
    assert flow["app_proto"] == "smtp"
    assert counts(flow) == {"cn_resident_id": 25, "email": 2}
    assert [e["event_type"] for e in events].count("alert") == 1
    assert_no_raw(values, output)

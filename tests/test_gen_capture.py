"""The synthetic egress capture generator (benchmarks/gen_capture.py) and the bundled sample.

Checked independently of egresswatch: dpkt parses every frame, our own checksum and seq/ack
bookkeeping per TCP flow, tshark finds nothing malformed and no TCP analysis flags, and the planted
values of the truth are where a receiver finds them after dechunking, gunzipping, URL-decoding,
charset-decoding and JSON-decoding the client bytes of tshark's `follow,tcp,raw`; values and
decoys are checked with python-stdnum and the rule pack's own definitions, not our classifier.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from urllib.parse import unquote_to_bytes

import dpkt
import pytest
import yaml
from stdnum import iban, luhn
from stdnum.cn import ric, uscc

from benchmarks.gen_capture import (BUILTIN_CLASSES, DECOY_CLASSES, INSIDE_NETWORKS, PACK_CLASSES, RULE_PACK, START_US,
                                    VALUE_CLASSES, main, parse_size, write_capture)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample-egress.pcap"
SAMPLE_TRUTH = ROOT / "samples" / "sample-egress.truth.json"
SIZE = 200_000
SEED = 3
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (Debian package tshark)")
INSIDE = [ipaddress.ip_network(n) for n in INSIDE_NETWORKS]


def _inside(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return any(ip in net for net in INSIDE if net.version == ip.version)


def _tshark(*args: str) -> str:
    proc = subprocess.run(["tshark", "-n", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("gen") / "capture.pcap"
    truth = write_capture(str(path), target_bytes=SIZE, seed=SEED)
    return path, truth


def _frames(path: Path) -> list[tuple[float, bytes]]:
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        return list(reader)


def _csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


# ----------------------------------------------------------------------------- file level


def test_same_seed_same_bytes_other_seed_other_bytes(capture, tmp_path):
    path, truth = capture
    again = tmp_path / "again.pcap"
    assert write_capture(str(again), target_bytes=SIZE, seed=SEED) == truth
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "other.pcap"
    write_capture(str(other), target_bytes=SIZE, seed=SEED + 1)
    assert other.read_bytes() != path.read_bytes()


@pytest.mark.parametrize("target", [60_000, 1_000_000])
def test_size_within_ten_percent(tmp_path, target):
    path = tmp_path / "sized.pcap"
    truth = write_capture(str(path), target_bytes=target, seed=5)
    size = path.stat().st_size
    assert truth["file_bytes"] == size
    assert abs(size - target) <= target * 0.10


def test_header_frames_and_truth_counts(capture):
    path, truth = capture
    raw = path.read_bytes()
    assert struct.unpack("<IHHiIII", raw[:24]) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    frames = _frames(path)
    assert len(frames) == truth["packets"] == sum(truth["packets_by_kind"].values())
    record_bytes = sum(16 + len(buf) for _, buf in frames)
    assert truth["file_bytes"] == 24 + record_bytes == 24 + sum(truth["bytes_by_kind"].values())
    stamps = [ts for ts, _ in frames]
    assert stamps == sorted(stamps)
    assert stamps[0] == START_US / 1e6
    assert max(len(buf) for _, buf in frames) == 1514
    assert truth["flows"]["ipv6"] > 0 and all(truth["flows"]["by_kind"].values())
    share = truth["bytes_by_kind"]["tls"] / sum(truth["bytes_by_kind"].values())
    assert 0.5 < share < 0.85


def test_checksums_and_tcp_bookkeeping(capture):
    """Valid IPv4/TCP/UDP/ICMP checksums; per flow a handshake, gapless in-order data, ACKs of
    nothing unseen, a FIN each way; several flows interleaved at once."""
    path, _ = capture
    flows: dict[tuple, dict] = {}
    order = []
    span: dict[tuple, list[int]] = {}
    for index, (_, buf) in enumerate(_frames(path)):
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        if isinstance(ip, dpkt.ip.IP):
            assert _csum(bytes(buf[14:34])) == 0xFFFF
            src, dst = ip.src, ip.dst
            pseudo = src + dst + struct.pack("!BBH", 0, ip.p, len(ip.data))
        else:
            assert isinstance(ip, dpkt.ip6.IP6)
            src, dst = ip.src, ip.dst
            pseudo = src + dst + struct.pack("!IxxxB", len(ip.data), ip.nxt)
        l4 = ip.data
        if isinstance(l4, dpkt.icmp.ICMP):
            assert _csum(bytes(l4)) == 0xFFFF
            continue
        assert _csum(pseudo + bytes(l4)) == 0xFFFF
        if not isinstance(l4, dpkt.tcp.TCP):
            continue
        key = (src, l4.sport, dst, l4.dport)
        rev = (dst, l4.dport, src, l4.sport)
        if l4.flags & dpkt.tcp.TH_SYN and not l4.flags & dpkt.tcp.TH_ACK:
            assert key not in flows, "5-tuple reused"
            flows[key] = {"next": {key: l4.seq + 1}, "fin": set(), "syn": True}
            order.append(key)
            continue
        flow = flows.get(key) or flows[rev]
        span.setdefault(key if key in flows else rev, [index, index])[1] = index
        nxt = flow["next"]
        if l4.flags & dpkt.tcp.TH_SYN:
            nxt[key] = l4.seq + 1
            assert l4.ack == nxt[rev]
            continue
        assert l4.seq == nxt[key], "gap or overlap"
        nxt[key] = (l4.seq + len(l4.data) + (1 if l4.flags & dpkt.tcp.TH_FIN else 0)) & 0xFFFFFFFF
        assert l4.flags & dpkt.tcp.TH_ACK
        assert (nxt[rev] - l4.ack) & 0xFFFFFFFF < 0x80000000, "ACK of unseen data"
        if l4.flags & dpkt.tcp.TH_FIN:
            flow["fin"].add(key)
    assert len(flows) > 10
    assert all(len(f["fin"]) == 2 for f in flows.values())
    # interleaved: many flows start while the previous one is still sending
    overlapping = sum(span[b][0] < span[a][1] for a, b in zip(order, order[1:]))
    assert overlapping > len(order) // 3


# ----------------------------------------------------------------------------- tshark


@needs_tshark
def test_tshark_finds_nothing_wrong(capture):
    path, _ = capture
    out = _tshark("-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                  "-o", "udp.check_checksum:TRUE", "-Y",
                  "_ws.malformed || tcp.analysis.flags || ip.checksum.status==0 || tcp.checksum.status==0"
                  " || udp.checksum.status==0 || icmp.checksum.status==0 || icmpv6.checksum.status==0")
    assert out == ""
    phs = _tshark("-r", str(path), "-q", "-z", "io,phs")
    for proto in ("ipv6", "tls", "http", "dns", "ssh", "icmp", "json", "mime_multipart", "urlencoded-form"):
        assert re.search(rf"^\s+{proto}\s+frames:", phs, re.M), proto
    conv = _tshark("-r", str(path), "-q", "-z", "conv,tcp")
    assert len(re.findall(r"<->", conv)) >= 10


@needs_tshark
def test_tshark_reads_sni(capture):
    path, truth = capture
    out = _tshark("-r", str(path), "-Y", "tls.handshake.type==1", "-T", "fields",
                  "-e", "tls.handshake.extensions_server_name")
    names = out.split()
    assert names and all(names)
    assert set(names) == set(truth["sni"])
    assert all(re.fullmatch(r"[a-z0-9.-]+\.example\.(com|net|org)", n) for n in names)


def _stream_ids(path: Path) -> dict[tuple, int]:
    out = _tshark("-r", str(path), "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0", "-T", "fields",
                  "-E", "separator=|", "-e", "tcp.stream", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport",
                  "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport")
    ids = {}
    for line in out.splitlines():
        stream, src4, src6, sport, dst4, dst6, dport = line.split("|")
        key = (ipaddress.ip_address(src4 or src6), int(sport), ipaddress.ip_address(dst4 or dst6), int(dport))
        ids[key] = int(stream)
    return ids


def _client_streams(path: Path, streams: list[int]) -> dict[int, bytes]:
    args = ["-r", str(path), "-q"]
    for stream in streams:
        args += ["-z", f"follow,tcp,raw,{stream}"]
    out = _tshark(*args)
    result, current = {}, None
    for line in out.splitlines():
        m = re.match(r"Filter: tcp.stream eq (\d+)", line)
        if m:
            current = int(m.group(1))
            result[current] = bytearray()
        elif current is not None and re.fullmatch(r"[0-9a-f]+", line):
            result[current] += bytes.fromhex(line)      # client -> server (server lines start with a tab)
    return {k: bytes(v) for k, v in result.items()}


def _decode_requests(stream: bytes) -> list[dict]:
    """Split a client byte stream into HTTP requests and decode each body as a server would."""
    requests, i = [], 0
    while i < len(stream):
        end = stream.index(b"\r\n\r\n", i)
        lines = stream[i:end].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        i = end + 4
        start = i
        if headers.get("transfer-encoding") == "chunked":
            body = bytearray()
            while True:
                eol = stream.index(b"\r\n", i)
                size = int(stream[i:eol].split(b";")[0], 16)
                i = eol + 2
                if size == 0:
                    i += 2
                    break
                body += stream[i:i + size]
                i += size + 2
            body = bytes(body)
        else:
            size = int(headers.get("content-length", "0"))
            body = stream[i:i + size]
            i += size
        wire = stream[start:i]
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        ctype = headers.get("content-type", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            body = unquote_to_bytes(body.replace(b"+", b" "))
        requests.append({"line": lines[0], "headers": headers, "wire": wire, "body": body})
    return requests


def _squash(text: str) -> str:
    """Compare as the classes count: case-folded, spaces dropped (IBANs are printed in groups)."""
    return text.casefold().replace(" ", "")


def _body_text(body: bytes, layers: list[str]) -> str:
    text = body.decode("gbk" if "gbk" in layers else "utf-8", "replace")
    if "json" in layers:
        text = json.dumps(json.loads(text), ensure_ascii=False)      # \uXXXX escapes resolved
    return text


def _check_entries(path: Path, entries: list[dict]) -> int:
    ids = _stream_ids(path)
    keyed = {}
    for entry in entries:
        f = entry["flow"]
        key = (ipaddress.ip_address(f["src"]), f["sport"], ipaddress.ip_address(f["dst"]), f["dport"])
        keyed[ids[key]] = entry
    streams = _client_streams(path, sorted(keyed))
    checked = 0
    for stream, entry in keyed.items():
        posts = [r for r in _decode_requests(streams[stream]) if r["line"].startswith("POST ")]
        assert len(posts) == len(entry["requests"])
        for req, info in zip(posts, entry["requests"]):
            assert req["line"].split()[1] == info["path"]
            assert req["headers"]["content-type"] == info["content_type"]
            assert ("chunked" in info["layers"]) == (req["headers"].get("transfer-encoding") == "chunked")
            assert ("gzip" in info["layers"]) == (req["headers"].get("content-encoding") == "gzip")
            text = _squash(_body_text(req["body"], info["layers"]))
            for values in list(info["values"].values()) + list(info["decoys"].values()):
                for value in values:
                    assert _squash(value) in text, (value, info["layers"])
                    checked += 1
            for value in info["split_across_chunks"]:
                assert value.encode() not in req["wire"]
            if "gbk" in info["layers"]:
                assert "手机号码".encode("gbk") in req["body"]
                assert "手机号码".encode("utf-8") not in req["body"]
    return checked


@needs_tshark
def test_planted_values_are_in_the_decoded_http_bodies(capture):
    path, truth = capture
    assert truth["planted"] and truth["non_egress"]
    assert _check_entries(path, truth["planted"] + truth["non_egress"]) == (
        sum(truth["planted_counts"].values()) + sum(truth["decoy_counts"].values())
        + sum(len(v) for e in truth["non_egress"] for d in ("values", "decoys") for v in e[d].values()))
    layers = {layer for e in truth["planted"] for r in e["requests"] for layer in r["layers"]}
    assert {"chunked", "gzip", "gbk", "multipart", "csv", "json", "form-urlencoded"} <= layers
    assert any(r["split_across_chunks"] for e in truth["planted"] for r in e["requests"])


def _mrz_check(field: str) -> int:
    values = {**{str(i): i for i in range(10)}, **{chr(65 + i): 10 + i for i in range(26)}, "<": 0}
    return sum(values[c] * (7, 3, 1)[i % 3] for i, c in enumerate(field)) % 10


def _pack() -> dict[str, dict]:
    pack = yaml.safe_load((ROOT / RULE_PACK).read_text(encoding="utf-8"))
    return {rule["id"]: rule for rule in pack["rules"]}


def test_values_valid_decoys_invalid_flows_egress(capture):
    _, truth = capture
    pack = _pack()
    assert truth["rule_packs"] == [RULE_PACK] and set(PACK_CLASSES) == set(pack)
    geo_terms = {t.casefold() for t in pack["geodata_terms"]["terms"]}
    seen = set()
    for entry in truth["planted"]:
        assert entry["direction"] == "egress"
        assert _inside(entry["flow"]["src"]) and not _inside(entry["flow"]["dst"])
        for cls, values in entry["values"].items():
            assert cls in VALUE_CLASSES
            for value in values:
                if cls in BUILTIN_CLASSES:          # identifiers are never reused; terms recur
                    assert value not in seen
                    seen.add(value)
                if cls == "cn_resident_id":
                    assert ric.is_valid(value) and not luhn.is_valid(value) and not uscc.is_valid(value)
                elif cls == "cn_mobile":
                    assert re.fullmatch(r"1[3-9]\d{9}", value)
                elif cls == "payment_card":
                    assert re.fullmatch(r"62\d{14}|4\d{15}", value) and luhn.is_valid(value)
                elif cls == "email":
                    assert re.fullmatch(r"[a-z][a-z0-9._]*[a-z0-9]\d{1,3}@example\.(com|cn|org|net)", value)
                elif cls == "cn_uscc":
                    assert uscc.is_valid(value) and not ric.is_valid(value)
                elif cls == "iban":
                    assert iban.is_valid(value) and value == iban.compact(value)
                elif cls == "cn_passport":
                    assert re.fullmatch(r"E\d{8}|E[A-HJ-NP-Z]\d{7}", value)
                elif cls == "state_secret_marking":
                    assert value[:2] in ("绝密", "机密", "秘密") and value[2] in "★☆*" and len(value) == 3
                elif cls == "geodata_terms":
                    assert value in geo_terms
                else:
                    assert re.fullmatch(pack["internal_project_code"]["pattern"], value)
        for cls, values in entry["decoys"].items():
            assert cls in DECOY_CLASSES
            for value in values:
                assert not luhn.is_valid(value)
                if cls == "cn_resident_id_bad_check":
                    assert len(value) == 18 and not ric.is_valid(value) and not uscc.is_valid(value)
                elif cls == "epoch_ms":
                    assert re.fullmatch(r"17\d{11}", value)
                elif cls == "order_no_18":
                    assert re.fullmatch(r"\d{18}", value) and not ric.is_valid(value) and not uscc.is_valid(value)
                elif cls == "iban_bad_check":
                    assert not iban.is_valid(value) and re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", value)
                elif cls == "passport_no_hotword":
                    assert re.fullmatch(r"E\d{8}|E[A-HJ-NP-Z]\d{7}", value)
                elif cls == "mrz_bad_check":
                    assert len(value) == 44 and value[10:13] == "CHN"
                    assert _mrz_check(value[:9]) == int(value[9])
                    assert _mrz_check(value[0:10] + value[13:20] + value[21:43]) != int(value[43])
                else:
                    assert re.fullmatch(r"4\d{15}", value)
    for entry in truth["non_egress"]:
        assert entry["direction"] == "domestic"
        assert _inside(entry["flow"]["src"]) and _inside(entry["flow"]["dst"])
    assert all(truth["planted_counts"].values())


def test_faker_context_in_both_locales(capture):
    """Names and postal addresses around the values come from Faker's en_US and zh_CN providers."""
    path, _ = capture
    payload = b"".join(frame for _, frame in _frames(path))
    assert re.search(rb", [A-Z]{2} \d{5}\b", payload)           # en_US: "Lake Victoria, VI 39349"
    text = payload.decode("gbk", "replace") + payload.decode("utf-8", "replace")
    assert re.search(r"[\u4e00-\u9fff]{2,}(?:省|自治区)[\u4e00-\u9fff]{2,}", text)   # zh_CN: "吉林省欣县..."
    assert b"Test User" not in payload


def test_no_plant_has_no_values(tmp_path):
    truth = write_capture(str(tmp_path / "plain.pcap"), target_bytes=60_000, seed=2, plant=False)
    assert truth["planted"] == [] and truth["non_egress"] == []
    assert not any(truth["planted_counts"].values())


# ----------------------------------------------------------------------------- CLI, sample


def test_parse_size():
    assert parse_size("300M") == 300_000_000
    assert parse_size("200K") == 200_000
    assert parse_size("1.5G") == 1_500_000_000
    assert parse_size("64MiB") == 64 << 20
    assert parse_size("12345") == 12345


def test_cli_writes_capture_and_truth(tmp_path):
    out, truth = tmp_path / "cli.pcap", tmp_path / "cli.truth.json"
    assert main([str(out), "--size", "50K", "--seed", "9", "--truth", str(truth)]) == 0
    data = json.loads(truth.read_text(encoding="utf-8"))
    assert data["seed"] == 9 and data["file_bytes"] == out.stat().st_size


def test_bundled_sample_is_current(tmp_path):
    """samples/sample-egress.pcap is what samples/make_sample.py writes with this generator."""
    truth = json.loads(SAMPLE_TRUTH.read_text(encoding="utf-8"))
    assert 150_000 <= SAMPLE.stat().st_size <= 250_000
    assert truth["seed"] == 7 and truth["file_bytes"] == SAMPLE.stat().st_size
    fresh = tmp_path / "sample.pcap"
    assert write_capture(str(fresh), target_bytes=truth["target_bytes"], seed=7) == truth, \
        "stale sample: run python samples/make_sample.py"
    assert fresh.read_bytes() == SAMPLE.read_bytes(), "stale sample: run python samples/make_sample.py"

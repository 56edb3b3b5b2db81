"""Reassembly matches tshark's `follow,tcp,raw` on every TCP stream of the third-party corpus.

The streams are enumerated from the corpus manifest and from tshark itself (`tcp.stream`),
not from a hand-written list. tshark renders a hole as "[N bytes missing in capture file]"
plus a NUL; our gap markers are rendered the same way for the comparison.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from collections import Counter

import pytest

from tests.streams import CORPUS, corpus_captures, reassemble

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (Debian package tshark)")

# Folders whose streams live inside encapsulations the decoder does not open (GRE/ERSPAN,
# VXLAN, GTP-U, SOCKS is fine but shares the folder): compared only where we see the stream.
_TUNNEL_FOLDERS = ("tunnels/",)


def _stream_flags(path: str) -> tuple[list[int], set[int], set[int]]:
    """All tcp.stream ids; those with capture loss (lost/unseen segments, snaplen-cut frames);
    those where tshark itself reports errors: conflicting overlapping IP fragments (reassembly is
    then a matter of policy) or frames its dissectors call malformed."""
    out = subprocess.run(
        ["tshark", "-r", path, "-o", "tcp.reassemble_out_of_order:TRUE", "-Y", "tcp", "-T", "fields",
         "-E", "separator=|", "-e", "tcp.stream", "-e", "tcp.analysis.lost_segment",
         "-e", "tcp.analysis.ack_lost_segment", "-e", "frame.cap_len", "-e", "frame.len",
         "-e", "ip.fragment.overlap.conflict", "-e", "ipv6.fragment.overlap.conflict", "-e", "_ws.malformed"],
        capture_output=True, text=True, timeout=120).stdout
    streams, lossy, conflicting = set(), set(), set()
    for line in out.splitlines():
        stream, lost, ack_lost, cap_len, wire_len, conflict4, conflict6, malformed = (line.split("|") + [""] * 8)[:8]
        if not stream.isdigit():
            continue
        n = int(stream)
        streams.add(n)
        if lost or ack_lost or (cap_len and wire_len and int(cap_len) < int(wire_len)):
            lossy.add(n)
        if conflict4 or conflict6 or malformed:
            conflicting.add(n)
    return sorted(streams), lossy, conflicting


def _tshark_streams(path: str, streams: list[int]) -> dict[int, tuple[tuple[str, int], tuple[str, int], bytes, bytes]]:
    """{stream: (node0, node1, bytes node0->node1, bytes node1->node0)} from one tshark pass."""
    if not streams:
        return {}
    cmd = ["tshark", "-r", path, "-o", "tcp.reassemble_out_of_order:TRUE", "-q"]
    for n in streams:
        cmd += ["-z", f"follow,tcp,raw,{n}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    result = {}
    for block in out.split("===================================================================\nFollow: tcp,raw\n")[1:]:
        lines = block.split("\n")
        stream = int(lines[0].rsplit(" ", 1)[1])
        nodes = []
        for line in lines[1:3]:
            host, port = line.split(": ", 1)[1].rsplit(":", 1)
            nodes.append((host.strip("[]"), int(port)))
        fwd, rev = bytearray(), bytearray()
        for line in lines[3:]:
            if line.startswith("====="):
                break
            if line.startswith("\t"):
                rev += bytes.fromhex(line.strip())
            elif line:
                fwd += bytes.fromhex(line)
        result[stream] = (nodes[0], nodes[1], bytes(fwd), bytes(rev))
    return result


def _before_first_gap(data: bytes) -> bytes:
    at = data.find(b" missing in capture file]\x00")
    return data if at < 0 else data[:data.rfind(b"[", 0, at)]


def _tshark_view(rel: str) -> tuple[str, dict, set[int], set[int]]:
    path = str(CORPUS / rel)
    ids, lossy, conflicting = _stream_flags(path)
    return rel, _tshark_streams(path, ids), lossy, conflicting


def test_reassembly_matches_tshark_follow() -> None:
    counts: Counter[str] = Counter()
    mismatches = []
    # Every capture of the corpus, damaged ones included (both readers stop at the damage);
    # tshark's start-up dominates, so run it for several files at once.
    captures = [row["path_in_corpus"] for row in corpus_captures()]
    with ThreadPoolExecutor(max_workers=3) as pool:
        views = list(pool.map(_tshark_view, captures))
    for rel, tshark, lossy, conflicting in views:
        if not tshark:
            continue
        path = str(CORPUS / rel)
        ours, _ = reassemble(path)
        by_endpoints: dict[frozenset, list] = {}
        for c in ours:
            if c.flow.proto == 6:
                cli, cport, srv, sport = c.endpoints
                by_endpoints.setdefault(frozenset([(cli, cport), (srv, sport)]), []).append(c)
        pairs = Counter(frozenset([a, b]) for a, b, _, _ in tshark.values())
        for stream, (node0, node1, fwd, rev) in sorted(tshark.items()):
            pair = frozenset([node0, node1])
            candidates = by_endpoints.get(pair, [])
            if not node0[0] or not node1[0]:
                counts["skipped: tshark shows no endpoints (header too damaged)"] += 1
                continue
            if stream in conflicting:
                counts["skipped: tshark reports malformed frames or conflicting fragment overlaps"] += 1
                continue
            if not candidates and rel.startswith(_TUNNEL_FOLDERS):
                counts["skipped: inside a tunnel we do not decapsulate"] += 1
                continue
            if pairs[pair] != 1 or len(candidates) != 1:
                counts["skipped: endpoints reused by several streams"] += 1
                if not candidates:
                    mismatches.append(f"{rel}: tshark stream {stream} {node0}->{node1} not seen by us")
                continue
            mine = candidates[0]
            toserver, toclient = mine.stream(0), mine.stream(1)
            ours_fwd, ours_rev = (toserver, toclient) if mine.endpoints[:2] == node0 else (toclient, toserver)
            if stream in lossy:
                # tshark stops a direction at its first unfilled hole; compare up to the first hole.
                ok = all(_before_first_gap(a)[:len(_before_first_gap(b))] == _before_first_gap(b)[:len(_before_first_gap(a))]
                         for a, b in ((ours_fwd, fwd), (ours_rev, rev)))
                counts["compared up to the first hole (capture loss)"] += 1
            else:
                ok = (ours_fwd, ours_rev) == (fwd, rev)
                counts["compared exactly"] += 1
                counts["bytes compared exactly"] += len(fwd) + len(rev)
            if not ok:
                mismatches.append(f"{rel}: stream {stream} {node0}<->{node1}: ours {len(ours_fwd)}/{len(ours_rev)} "
                                  f"bytes, tshark {len(fwd)}/{len(rev)} (node0->node1 / node1->node0)")
    print("\nTCP streams vs tshark follow,tcp,raw: " + "; ".join(f"{k}: {v:,}" for k, v in sorted(counts.items())))
    assert counts["compared exactly"] > 100
    assert not mismatches, "\n".join(mismatches)

"""Reassembly matches tshark's `follow,tcp,raw` on every TCP stream of the third-party corpus.

The streams are enumerated from the corpus manifest and from tshark itself (`tcp.stream`),
not from a hand-written list. tshark renders a hole as "[N bytes missing in capture file]"
plus a NUL; our gap markers are rendered the same way for the comparison.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import pytest

from tests.streams import CORPUS, corpus_captures, reassemble

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (Debian package tshark)")

# Folders whose streams live inside encapsulations the decoder does not open (GRE/ERSPAN,
# VXLAN, GTP-U, SOCKS is fine but shares the folder): compared only where we see the stream.
_TUNNEL_FOLDERS = ("tunnels/",)


def _tshark_streams(path: str) -> list[tuple[tuple[str, int], tuple[str, int], bytes, bytes]]:
    """[(node0, node1, bytes node0->node1, bytes node1->node0)] for every TCP stream."""
    ids = subprocess.run(["tshark", "-r", path, "-Y", "tcp", "-T", "fields", "-e", "tcp.stream"],
                         capture_output=True, text=True, timeout=120).stdout.split()
    streams = sorted({int(i) for i in ids if i.isdigit()})
    if not streams:
        return []
    cmd = ["tshark", "-r", path, "-o", "tcp.reassemble_out_of_order:TRUE", "-q"]
    for n in streams:
        cmd += ["-z", f"follow,tcp,raw,{n}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    result = []
    for block in out.split("===================================================================\nFollow: tcp,raw\n")[1:]:
        lines = block.split("\n")
        nodes = []
        for line in lines[1:3]:
            addr = line.split(": ", 1)[1]
            host, port = addr.rsplit(":", 1)
            nodes.append((host.strip("[]"), int(port)))
        fwd, rev = bytearray(), bytearray()
        for line in lines[3:]:
            if line.startswith("====="):
                break
            if line.startswith("\t"):
                rev += bytes.fromhex(line.strip())
            elif line:
                fwd += bytes.fromhex(line)
        result.append((nodes[0], nodes[1], bytes(fwd), bytes(rev)))
    return result


def _ok_captures() -> list[str]:
    return [row["path_in_corpus"] for row in corpus_captures() if row["tshark_notes"] == "ok"]


def test_reassembly_matches_tshark_follow() -> None:
    compared = Counter()
    mismatches = []
    for rel in _ok_captures():
        path = str(CORPUS / rel)
        tshark = _tshark_streams(path)
        if not tshark:
            continue
        ours, _ = reassemble(path)
        by_endpoints: dict[frozenset, list] = {}
        for c in ours:
            if c.flow.proto != 6:
                continue
            cli, cport, srv, sport = c.endpoints
            by_endpoints.setdefault(frozenset([(cli, cport), (srv, sport)]), []).append(c)
        tshark_count = Counter(frozenset([a, b]) for a, b, _, _ in tshark)
        for node0, node1, fwd, rev in tshark:
            pair = frozenset([node0, node1])
            candidates = by_endpoints.get(pair, [])
            if tshark_count[pair] != 1 or len(candidates) != 1:
                compared["ambiguous_or_unseen"] += 1
                if not candidates and not rel.startswith(_TUNNEL_FOLDERS):
                    mismatches.append(f"{rel}: tshark stream {node0}->{node1} not seen by us")
                continue
            mine = candidates[0]
            cli, cport = mine.endpoints[:2]
            toserver, toclient = mine.stream(0), mine.stream(1)
            if (cli, cport) == node0:
                ok = (toserver, toclient) == (fwd, rev)
            else:
                ok = (toclient, toserver) == (fwd, rev)
            compared["streams"] += 1
            compared["bytes"] += len(fwd) + len(rev)
            if not ok:
                mismatches.append(f"{rel}: {node0}<->{node1}: ours {len(toserver)}/{len(toclient)} bytes, "
                                  f"tshark {len(fwd)}/{len(rev)} (node0->node1 / node1->node0)")
    print(f"\ncompared {compared['streams']} TCP streams ({compared['bytes']:,} bytes) with tshark; "
          f"{compared['ambiguous_or_unseen']} skipped as ambiguous or inside unsupported tunnels")
    assert compared["streams"] > 50
    assert not mismatches, "\n".join(mismatches)

"""Peer approaches for `benchmarks.bench_peers` (issue 5), one module per peer.

Each module has `run(job: Job) -> dict` and runs alone in its own process, started by the
harness as `python -m benchmarks.peers NAME CAPTURE ...` under `taskset`, so that every
approach is pinned to the same core, timed on its own and measured for peak RSS alone. The
dict it returns (printed as one JSON line) has:

    packets, bytes   what the timed part processed (captured frame bytes)
    seconds          the timed part only (see `timed`)
    timed            what the timer covers, in words
    hits             regex match events (only comparable between runs of the same approach)
    found            optional: [[src, sport, dst, dport, {class: distinct values}], ...] for
                     approaches that report confirmed matches per flow direction
    sliced           true when only the first `slice_packets` packets were processed
    note             anything the table should say about the row

Values matched by a peer stay in its process: `found` carries distinct counts, never values.

Shared here: the rules (the built-in personal-data rules plus the rule packs, exactly what
`egresswatch replay --rules` compiles), their Hyperscan block-mode database with the engine's
flags, their translation to Python `re`, payload extraction with dpkt, and a deterministic pack
of synthetic keywords (the issue's limit was measured with 2,000 UTF-8/GBK keywords).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from classifiers.classes import RULES, Rule
from classifiers.rulepacks import load_packs


@dataclass(frozen=True, slots=True)
class Job:
    capture: str
    rule_packs: tuple[str, ...] = ()
    slice_packets: int = 0          # 0: the whole capture


def load_rules(packs: Sequence[str]) -> list[Rule]:
    """The rules `egresswatch replay --rules PACK...` scans with: built-ins first, then packs."""
    return list(RULES) + load_packs(packs)[0]


def block_database(rules: Sequence[Rule], *, as_written: bool = False):
    """One Hyperscan block-mode database of `rules` with exactly the expressions and flags the
    engine compiles (`classifiers.engine.expressions`: fenced patterns, SOM_LEFTMOST except for
    anchored rules, CASELESS where the rule says so); pattern ids are rule indexes. A fenced
    pattern needs one byte before a value: scan `EDGE + payload`.
    as_written=True: each rule's pattern as written, every one with SOM_LEFTMOST (no fence): the
    formulation the issue measured its limit with, for the record."""
    import hyperscan

    from classifiers.engine import expressions

    if as_written:
        patterns = [r.pattern for r in rules]
        flags = [hyperscan.HS_FLAG_SOM_LEFTMOST | (hyperscan.HS_FLAG_CASELESS if r.caseless else 0) for r in rules]
    else:
        patterns, flags = expressions(rules)
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns), flags=flags)
    return database


EDGE = b"\n"      # what the engine writes first in every stream: the fence of a value at offset 0


def python_regexes(rules: Sequence[Rule]) -> tuple[list[re.Pattern[bytes]], list[str]]:
    """The rules as Python `re` byte patterns, and a line for each rule that does not translate.

    The patterns are written in the common PCRE subset (classes, bounded repeats, non-capturing
    groups, \\xNN escapes), so they compile unchanged; CASELESS becomes re.IGNORECASE. What does
    not carry over is the match semantics: Hyperscan reports every end offset of every match
    (with SOM_LEFTMOST the leftmost start for each), `re.finditer` reports non-overlapping
    leftmost-first matches, so hit counts of the two are not comparable."""
    compiled: list[re.Pattern[bytes]] = []
    untranslated: list[str] = []
    for rule in rules:
        try:
            compiled.append(re.compile(rule.pattern, re.IGNORECASE if rule.caseless else 0))
        except re.error as exc:
            untranslated.append(f"{rule.class_id}: {exc}")
    return compiled, untranslated


def count_matches(patterns: Sequence[re.Pattern[bytes]], payload: bytes) -> int:
    """Non-overlapping `re` matches of every pattern in one payload (the `re` peers' hit count)."""
    return sum(1 for pattern in patterns for _match in pattern.finditer(payload))


def frames(path: str, limit: int = 0) -> Iterator[bytes]:
    """Captured frames of a pcap or pcapng file with dpkt, at most `limit` (0: all)."""
    import dpkt

    with open(path, "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        for count, (_ts, frame) in enumerate(reader, 1):
            yield frame
            if count == limit:
                return


def transport_payload(frame: bytes) -> bytes:
    """The TCP or UDP payload of an Ethernet frame (IPv4 or IPv6), or b"" (dpkt, no reassembly)."""
    import dpkt

    ip = dpkt.ethernet.Ethernet(frame).data
    if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        l4 = ip.data
        if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
            return bytes(l4.data)
    return b""


def payload_buffer(path: str) -> tuple[bytearray, int, int]:
    """All TCP/UDP payloads of the capture concatenated in one buffer; also packets and bytes."""
    buffer = bytearray()
    packets = nbytes = 0
    for frame in frames(path):
        packets += 1
        nbytes += len(frame)
        buffer += transport_payload(frame)
    return buffer, packets, nbytes


# Common characters of Chinese project and document vocabulary; every one has a GBK encoding.
_TERM_CHARS = ("数据地图测绘成果坐标项目工程计划方案系统平台网络安全国家重点核心重要内部机密资料报告统计"
               "客户用户信息资源能源电力交通金融医疗基因卫星遥感航天海洋气象矿产水利港口铁路通信芯片")


def synthetic_terms(count: int, seed: int = 5) -> list[str]:
    """`count` distinct deterministic keywords: 2-5 Chinese characters, one in ten an ASCII codename."""
    rng = random.Random(seed)
    terms: dict[str, None] = {}
    while len(terms) < count:
        if len(terms) % 10 == 9:
            terms[f"Project {rng.choice(('Aurora', 'Borealis', 'Cobalt', 'Delta', 'Ember'))}-{rng.randrange(10000):04d}"] = None
        else:
            terms["".join(rng.choice(_TERM_CHARS) for _ in range(rng.randint(2, 5)))] = None
    return list(terms)


# Terms per rule entry. A terms rule compiles to one alternation, and Hyperscan refuses
# patterns longer than 16,000 characters (about 350 escaped 4-character Chinese terms), so the
# keywords are split across entries of one class (same id, grade and description).
TERMS_PER_ENTRY = 200


def write_terms_pack(path: Path, count: int, seed: int = 5) -> Path:
    """A rule pack (schema v1) with `count` synthetic keywords, matched in UTF-8 and GBK."""
    import yaml

    terms = synthetic_terms(count, seed)
    entries = [{"id": "bench_terms", "kind": "terms", "grade": "important",
                "description": f"{count} synthetic keywords (benchmark only)",
                "terms": terms[i:i + TERMS_PER_ENTRY]} for i in range(0, len(terms), TERMS_PER_ENTRY)]
    pack = {"name": "bench-synthetic-terms", "version": 1, "rules": entries}
    path.write_text(yaml.safe_dump(pack, allow_unicode=True), encoding="utf-8")
    return path

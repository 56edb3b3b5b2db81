"""Important-data rule packs: schema validation, UTF-8 and GBK terms, markings, regexes, grades."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import UsageError
from classifiers.classes import RULES
from classifiers.engine import Engine
from classifiers.findings import FindingLimits, Findings
from classifiers.rulepacks import load_packs
from tests.streams import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "deploy" / "rules" / "example-important-data.yaml"


@pytest.fixture(scope="module")
def example():
    rules, packs = load_packs([str(EXAMPLE)])
    return Engine(RULES + tuple(rules)), packs


def scan(engine: Engine, packs, data: bytes) -> Findings:
    findings = Findings(FindingLimits(), {}, b"k", packs)
    engine.scan_bytes(data, findings.add)
    return findings


def test_terms_match_in_utf8_and_gbk_and_caselessly(example):
    engine, packs = example
    for encoding in ("utf-8", "gbk"):
        f = scan(engine, packs, "附件为高精度地图和测绘成果。".encode(encoding))
        assert f.count("geodata_terms") == 2, encoding
    assert scan(engine, packs, b"see the hd MAP tiles here").count("geodata_terms") == 1


def test_marking_and_grade_set_severity(example):
    engine, packs = example
    f = scan(engine, packs, "文件密级：机密★10年".encode("gbk"))
    assert f.count("state_secret_marking") == 1
    fields = f.event_fields()
    assert fields["severity"] == 1
    assert fields["matches"][0]["grade"] == "core" and fields["matches"][0]["samples"] == ["机密★"]


def test_regex_rule_values_are_masked(example):
    engine, packs = example
    f = scan(engine, packs, b"ticket for PRJ-2026-0042 and PRJ-2026-0042 again, PRJ-2027-1111")
    entry = f.event_fields()["matches"][0]
    assert entry["class"] == "internal_project_code" and entry["count"] == 2 and entry["grade"] == "general"
    assert all("2026-0042" not in s for s in entry["samples"])
    assert f.event_fields()["severity"] == 3


def test_terms_file_relative_to_the_pack(tmp_path: Path):
    (tmp_path / "terms.txt").write_text("# comment\n稀土配方\nBlueprint X9\n\n", encoding="utf-8")
    pack = tmp_path / "p.yaml"
    pack.write_text("name: t\nrules:\n  - {id: formulas, kind: terms, grade: core, terms_file: terms.txt}\n",
                    encoding="utf-8")
    rules, packs = load_packs([str(pack)])
    f = scan(Engine(RULES + tuple(rules)), packs, "含稀土配方".encode("gbk") + b" and Blueprint X9.")
    assert f.count("formulas") == 2


@pytest.mark.parametrize("text, message", [
    ("rules: []\n", "needs 'name'"),
    ("name: x\nversion: 2\nrules: []\n", "schema version"),
    ("name: x\nrules:\n  - {id: Bad-Id, kind: terms, grade: core, terms: [ab]}\n", "snake_case"),
    ("name: x\nrules:\n  - {id: ok_id, kind: words, grade: core, terms: [ab]}\n", "'kind'"),
    ("name: x\nrules:\n  - {id: ok_id, kind: terms, grade: secret, terms: [ab]}\n", "'grade'"),
    ("name: x\nrules:\n  - {id: ok_id, kind: terms, grade: core}\n", "at least one term"),
    ("name: x\nrules:\n  - {id: email, kind: terms, grade: core, terms: [ab]}\n", "already defined"),
    ("name: x\nrules:\n  - {id: ok_id, kind: regex, grade: core, pattern: 'a(?=b)'}\n", "cannot compile"),
    ("name: x\nrules: [\n", "not valid YAML"),
    ("name: x\nrules:\n  - {id: ok_id, kind: terms, grade: core, terms: [ab], colour: red}\n", "unknown key"),
])
def test_bad_packs_are_usage_errors(tmp_path: Path, text: str, message: str):
    pack = tmp_path / "bad.yaml"
    pack.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("?", r"\?")):
        rules, _ = load_packs([str(pack)])
        Engine(RULES + tuple(rules))


def test_a_dictionary_of_thousands_of_chinese_terms_compiles_and_matches(tmp_path: Path):
    # Hyperscan refuses one pattern over 16,000 characters; 2,000 four-character Chinese terms are
    # ~50,000 escaped bytes in UTF-8, so the pack must split them into several rules of one class.
    import random
    rng = random.Random(3)
    terms = sorted({"".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(4)) for _ in range(2000)})
    (tmp_path / "terms.txt").write_text("\n".join(terms), encoding="utf-8")
    (tmp_path / "pack.yaml").write_text("name: big\nversion: 1\nrules:\n  - id: big_dictionary\n    kind: terms\n"
                                        "    grade: important\n    terms_file: terms.txt\n", encoding="utf-8")
    rules, packs = load_packs([str(tmp_path / "pack.yaml")])
    assert len(rules) > 2 and all(len(rule.pattern) < 16_000 for rule in rules)
    engine = Engine(RULES + tuple(rules))
    for encoding in ("utf-8", "gbk"):
        text = "前言" + "，".join(terms[::100]) + "。"
        found = scan(engine, packs, text.encode(encoding, errors="ignore"))
        spellable = [t for t in terms[::100] if t.encode(encoding, errors="ignore").decode(encoding) == t]
        assert found.count("big_dictionary") == len(spellable) > 15, encoding

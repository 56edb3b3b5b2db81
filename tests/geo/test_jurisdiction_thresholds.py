"""Transfer-mechanism thresholds of the jurisdiction profiles (PRC 2024 Provisions) and the CIIO switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import UsageError
from geo.jurisdiction import load_profile

SC = "standard_contract_or_certification"
SA = "security_assessment"

# (non-sensitive persons, sensitive persons, important data) -> mechanism, at each boundary of
# Arts. 5(4), 7(2) and 8: "以上" includes the number, "不满" excludes it (Civil Code Art. 1259).
NON_CIIO = [
    ((0, 0, False), "none"),
    ((99_999, 0, False), "none"),
    ((100_000, 0, False), SC),
    ((999_999, 0, False), SC),
    ((1_000_000, 0, False), SA),
    ((0, 1, False), SC),
    ((0, 9_999, False), SC),
    ((0, 10_000, False), SA),
    ((0, 0, True), SA),
    ((99_999, 9_999, False), SC),
    ((999_999, 9_999, False), SC),
    ((1_000_000, 1, False), SA),
    ((50, 0, True), SA),
]


@pytest.mark.parametrize(("counts", "expected"), NON_CIIO)
def test_cn_thresholds_at_each_boundary(counts: tuple[int, int, bool], expected: str):
    assert load_profile("cn").required_mechanism(*counts) == expected


@pytest.mark.parametrize(("counts", "expected"), [
    ((0, 0, False), "none"),
    ((1, 0, False), SA),
    ((0, 1, False), SA),
    ((0, 0, True), SA),
    ((99_999, 0, False), SA),
    ((100_000, 9_999, False), SA),
])
def test_ciio_switch_makes_every_threshold_zero(counts: tuple[int, int, bool], expected: str):
    cn = load_profile("cn")
    ciio = cn.with_ciio(True)
    assert ciio.ciio and not cn.ciio
    assert ciio.required_mechanism(*counts) == expected
    assert ciio.with_ciio(False).required_mechanism(*counts) == cn.required_mechanism(*counts)


def test_cn_profile_cites_its_source_and_keeps_home_rules():
    cn = load_profile("cn")
    assert "2024-03-22" in cn.thresholds_source and "cac.gov.cn" in cn.thresholds_source
    assert cn.counting_timezone == "Asia/Shanghai"
    assert all(rule.article for rule in cn.rules + cn.ciio_rules)
    # --home keeps the thresholds and the switch
    both = cn.with_ciio(True).with_home(("CN", "HK"))
    assert both.cross_border("HK") is False and both.required_mechanism(1, 0, False) == SA


def test_eea_has_no_volume_thresholds_and_no_ciio_switch():
    eea = load_profile("eea")
    assert eea.rules == () and eea.required_mechanism(10_000_000, 1_000_000, True) == "none"
    with pytest.raises(UsageError, match="no CIIO rules"):
        eea.with_ciio(True)
    assert eea.with_ciio(False) == eea
    assert "BR" in eea.adequate


def test_negative_counts_are_a_caller_bug():
    with pytest.raises(ValueError):
        load_profile("cn").required_mechanism(-1, 0, False)


def test_custom_profile_with_ciio_on(tmp_path: Path):
    path = tmp_path / "acme.toml"
    path.write_text('name = "acme"\nlabel = "CN"\nhome = ["CN"]\nciio = true\n[thresholds]\n'
                    'rules = [{ count = "sensitive_persons", at_least = 5, mechanism = "security_assessment" }]\n'
                    'ciio_rules = [{ count = "nonsensitive_persons", at_least = 1, mechanism = "security_assessment" }]\n')
    acme = load_profile(str(path))
    assert acme.ciio and acme.required_mechanism(1, 0, False) == SA
    assert acme.with_ciio(False).required_mechanism(1, 0, False) == "none"
    assert acme.with_ciio(False).required_mechanism(0, 5, False) == SA


@pytest.mark.parametrize(("body", "message"), [
    ('ciio = "yes"\n', "ciio must be true or false"),
    ("ciio = true\n", "ciio = true needs"),
    ('[thresholds]\nrules = [{ count = "people", at_least = 1, mechanism = "security_assessment" }]\n', "count must be"),
    ('[thresholds]\nrules = [{ count = "sensitive_persons", at_least = 0, mechanism = "security_assessment" }]\n',
     "at_least must be"),
    ('[thresholds]\nrules = [{ count = "sensitive_persons", at_least = 1, mechanism = "assessment" }]\n',
     "mechanism must be"),
    ('[thresholds]\nrules = [{ count = "sensitive_persons", at_least = 1, mechanism = "none" }]\n',
     "mechanism must be"),
    (('[thresholds]\nrules = [{ count = "sensitive_persons", at_least = 1, mechanism = "security_assessment", '
      'typo = 1 }]\n'), "unknown key typo"),
    ('[thresholds]\nrule = []\n', "unknown key thresholds.rule"),
    ('[thresholds]\nrules = "all"\n', "must be a list"),
])
def test_bad_threshold_tables_are_one_line_errors(tmp_path: Path, body: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nlabel = "X"\nhome = ["CN"]\n' + body)
    with pytest.raises(UsageError, match=message) as info:
        load_profile(str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)

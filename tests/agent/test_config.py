"""Configuration: documented defaults, TOML, environment and CLI precedence, validation."""

from __future__ import annotations

import re

import pytest

from agent.config import Config, load
from agent.errors import UsageError
from tests.streams import PROJECT_ROOT


def test_documented_example_config_is_exactly_the_defaults():
    assert load(str(PROJECT_ROOT / "deploy" / "egresswatch.toml"), {}, {}) == Config()


def test_durations_are_seconds_in_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[flows]\ntcp_closed_timeout = 2.5\nmax_flows = 10\n[defrag]\ntimeout = 1\n")
    config = load(str(path), {}, {})
    assert config.flows.tcp_closed_timeout_us == 2_500_000 and config.flows.max_flows == 10
    assert config.defrag.timeout_us == 1_000_000


def test_precedence_file_then_environment_then_command_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('eve = "file.json"\ninternal = ["10.0.0.0/8"]\nsensitivity_profile = "gbt-45574"\n')
    env = {"EGRESSWATCH_EVE": "env.json", "EGRESSWATCH_INTERNAL": "192.168.0.0/16"}
    config = load(str(path), env, {"eve": "cli.json", "internal": None})
    assert config.eve == "cli.json"
    assert config.internal == ("192.168.0.0/16",)
    assert config.sensitivity_profile == "gbt-45574"
    assert load(None, {"EGRESSWATCH_CONFIG": str(path)}, {}).eve == "file.json"
    path.write_text('rule_cache = "/srv/rules"\n')
    assert load(str(path), {}, {}).rule_cache == "/srv/rules"
    assert load(str(path), {"EGRESSWATCH_RULE_CACHE": "off"}, {}).rule_cache == "off"
    assert load(str(path), {"EGRESSWATCH_RULE_CACHE": "off"}, {"rule_cache": "auto"}).rule_cache == "auto"


@pytest.mark.parametrize("text, message", [
    ("bogus = 1\n", "unknown option"),
    ("[flows]\nmax_flow = 1\n", "unknown option [flows] max_flow"),
    ("[flows]\nmax_flows = -1\n", "non-negative"),
    ("[flows]\nmax_flows = true\n", "non-negative"),
    ('internal = ["10.0.0.0/40"]\n', "bad CIDR"),
    ('home = ["CHN"]\n', "two-letter"),
    ('progress = "sometimes"\n', "progress"),
    ("flows = 3\n", "must be a table"),
    ("this is not toml", "not valid TOML"),
    ("rule_cache = false\n", "rule_cache must be"),
])
def test_bad_config_is_a_usage_error(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(str(path), {}, {})


def test_example_config_documents_every_option():
    import tomllib
    from dataclasses import fields

    from agent.config import CaptureOptions, DefragLimits, _options_from, _toml_names
    from agent.flows import FlowLimits
    from agent.metrics import MetricsListen
    from classifiers.findings import FindingLimits

    data = tomllib.loads((PROJECT_ROOT / "deploy" / "egresswatch.toml").read_text())
    sections = {"findings": FindingLimits, "flows": FlowLimits, "defrag": DefragLimits, "capture": CaptureOptions}
    text = (PROJECT_ROOT / "deploy" / "egresswatch.toml").read_text()
    optional = {f.name for f in fields(Config) if f.default is None}      # documented, commented out
    top = {f.name for f in fields(Config)} - set(sections) - {"metrics", "syslog", "webhook"} - optional
    assert top <= set(data), f"undocumented: {top - set(data)}"
    assert all(f"\n# {name} = " in text for name in optional - {"syslog", "webhook"})
    from agent.exporters.syslog import SyslogOptions
    from agent.exporters.webhook import WebhookOptions
    for table, cls in (("syslog", SyslogOptions), ("webhook", WebhookOptions)):   # documented, commented out
        commented = tomllib.loads("\n".join(line[2:] for line in text.splitlines() if line.startswith("# ")
                                            and (" = " in line or line.startswith("# ["))).split(f"[{table}]")[1]
                                  .split("\n[")[0])
        assert set(commented) == {f.name for f in fields(cls)}, table
        assert _options_from(commented, cls, table) == cls()
    for name, cls in sections.items():
        assert set(_toml_names(cls)) == set(data[name]), name
    metrics = {f.name for f in fields(MetricsListen)} - {"host", "port"} | {"listen"}
    assert metrics == set(data["metrics"])


def test_capture_and_metrics_sections_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[capture]\ninterface = "ens1"\nblock_count = 8\npromiscuous = false\n'
                    '[metrics]\nlisten = "0.0.0.0:9100"\n')
    config = load(str(path), {"EGRESSWATCH_BPF": "not port 22"}, {"interface": "ens2"})
    assert config.capture.interface == "ens2" and config.capture.block_count == 8
    assert config.capture.promiscuous is False and config.capture.bpf == "not port 22"
    assert (config.metrics.host, config.metrics.port) == ("0.0.0.0", 9100)
    assert load(None, {}, {"metrics_listen": "off"}).metrics.port == 0
    for text, message in (('[capture]\nblock_count = "x"\n', "block_count must be int"),
                          ('[capture]\nnope = 1\n', "unknown option [capture] nope"),
                          ('[metrics]\nlisten = "9100"\n', "ADDRESS:PORT")):
        path.write_text(text)
        with pytest.raises(UsageError, match=re.escape(message)):
            load(str(path), {}, {})


def test_sink_sections_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[syslog]\naddress = "127.0.0.1:6514"\ntransport = "tls"\nseverities = [2, 3, 4]\n'
                    'drain_timeout = 1\n[webhook]\nurl = "http://127.0.0.1:8080/hook"\n')
    config = load(str(path), {"EGRESSWATCH_WEBHOOK_TOKEN": "t0ken"}, {"syslog_transport": "tcp"})
    assert config.syslog.address == "127.0.0.1:6514" and config.syslog.transport == "tcp"
    assert config.syslog.severities == (2, 3, 4) and config.syslog.drain_timeout == 1.0
    assert config.webhook.url == "http://127.0.0.1:8080/hook" and config.webhook.bearer_token == "t0ken"
    assert "t0ken" not in repr(config)
    assert load(None, {}, {}).syslog is None and load(None, {}, {}).webhook is None
    assert load(None, {}, {"syslog_address": "10.1.1.1:514"}).syslog.address == "10.1.1.1:514"
    path.write_text('[syslog]\nseverities = ["err"]\n')
    with pytest.raises(UsageError, match=re.escape("[syslog] severities must be a list of int")):
        load(str(path), {}, {})

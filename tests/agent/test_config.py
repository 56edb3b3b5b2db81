"""Configuration: documented defaults, TOML, environment and CLI precedence, validation."""

from __future__ import annotations

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
])
def test_bad_config_is_a_usage_error(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(str(path), {}, {})

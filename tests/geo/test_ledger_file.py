"""The year's ledger across runs: the file keeps sketches and the digest key together, is written
atomically with owner-only permissions, and a damaged file is a one-line usage error; replays
that share a ledger count a person once however often they left."""

from __future__ import annotations

import os
import random
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agent.errors import UsageError
from classifiers.findings import DistinctSketch
from geo.ledger import LEDGER_REGISTERS, LedgerFile, TransferLedger
from tests.streams import PROJECT_ROOT
from tests.test_classification_e2e import INSIDE, OUTSIDE, post, replay, rid, tcp_conversation

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: files made by root for another user")


def _ledger(values: int) -> TransferLedger:
    sketch = DistinctSketch(LEDGER_REGISTERS)
    for n in range(values):
        sketch.add(random.Random(n).randbytes(16))
    ledger = TransferLedger()
    ledger.sketches[2026, "cn_mobile"] = sketch.registers
    ledger.beyond[2026, "cn_mobile"] = 7
    ledger.important_years.add(2025)
    return ledger


def test_round_trip_permissions_and_no_leftovers(tmp_path: Path):
    path = tmp_path / "ledger.msgpack"
    store = LedgerFile(str(path))
    key, empty = store.load()
    assert len(key) == 16 and not empty and not path.exists()     # no file yet: a new key
    ledger = _ledger(500)
    store.save(key, ledger)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.msgpack"]
    again_key, again = store.load()
    assert again_key == key and again == ledger
    assert abs(again.persons(2026, ["cn_mobile"]) - 507) < 30


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "version", "registers"])
def test_damaged_ledger_is_a_one_line_usage_error(tmp_path: Path, damage: str):
    import msgpack
    path = tmp_path / "ledger.msgpack"
    store = LedgerFile(str(path))
    store.save(b"k" * 16, _ledger(10))
    data = path.read_bytes()
    record = msgpack.unpackb(data, raw=False)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = b"\x00\xff" * 50
    elif damage == "foreign":
        data = msgpack.packb({"format": "something-else"})
    elif damage == "version":
        data = msgpack.packb({**record, "version": 99}, use_bin_type=True)
    else:
        record["sketches"][0][2] = b"\x01" * 100
        data = msgpack.packb(record, use_bin_type=True)
    path.write_bytes(data)
    with pytest.raises(UsageError) as info:
        store.load()
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "move it away" in message


def _uploads(seed: int, persons: int, port: int) -> list:
    rng = random.Random(seed)
    body = "\n".join(rid(rng) for _ in range(persons)).encode()
    return tcp_conversation(INSIDE, OUTSIDE, port, [post(body, "text/plain")], [b"HTTP/1.1 200 OK\r\n\r\n"])


def _persons(output: str) -> int:
    # Resident ID numbers are sensitive personal information under the default profile.
    match = re.search(r"~([\d,]+) persons' sensitive personal information", output)
    assert match, output
    return int(match.group(1).replace(",", ""))


def test_replays_sharing_a_ledger_count_each_person_once(tmp_path: Path):
    ledger = tmp_path / "state" / "ledger.msgpack"
    ledger.parent.mkdir()
    first, second = _uploads(1, 40, 41000), _uploads(2, 25, 41001)
    # Estimates (HyperLogLog, 4096 registers): exact up to a register collision or two at this size.
    _, out = replay(tmp_path, first, "--ledger", str(ledger))
    once = _persons(out)
    assert abs(once - 40) <= 2 and f"in the ledger {ledger}" in out
    _, out = replay(tmp_path, first, "--ledger", str(ledger))         # the same persons again
    assert _persons(out) == once                                      # not one more
    _, out = replay(tmp_path, second, "--ledger", str(ledger), "--workers", "2")
    assert abs(_persons(out) - 65) <= 3
    _, out = replay(tmp_path, first)                                  # no ledger: this input only
    assert abs(_persons(out) - 40) <= 2 and "in this input" in out
    ledger.write_bytes(b"not a ledger")
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(tmp_path / "in.pcap"), "--ledger",
                             str(ledger), "--eve", str(tmp_path / "eve.json")], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("move it away to start the year's counts again")


def test_one_writer_at_a_time(tmp_path: Path):
    path = tmp_path / "ledger.msgpack"
    first = LedgerFile(str(path))
    first.lock()
    with pytest.raises(UsageError, match="in use by another egresswatch"):
        LedgerFile(str(path)).lock()
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(PROJECT_ROOT / "samples" /
                             "sample-egress.pcap"), "--ledger", str(path), "--eve", str(tmp_path / "eve.json")],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 2 and "in use by another egresswatch" in result.stderr
    assert not path.exists()                           # the refused run wrote nothing
    first.close()


def test_ledger_setting(monkeypatch):
    from geo.ledger import ledger_path
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert ledger_path("auto", live=True) is None and ledger_path("off", live=True) is None
    assert ledger_path("/srv/ledger.msgpack", live=False) == "/srv/ledger.msgpack"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/egresswatch:/var/lib/other")
    assert ledger_path("auto", live=True) == "/var/lib/egresswatch/ledger.msgpack"
    assert ledger_path("auto", live=False) is None        # replay: only a ledger named


@needs_root
def test_root_saving_over_the_agents_ledger_keeps_its_owner(tmp_path: Path):
    path = tmp_path / "ledger.msgpack"
    store = LedgerFile(str(path))
    store.save(b"k" * 16, _ledger(5))
    os.chown(path, 65534, 65534)
    store.save(b"k" * 16, _ledger(9))
    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)
    assert store.load()[1] == _ledger(9)


def test_lock_is_released_and_bad_paths_are_usage_errors(tmp_path: Path):
    path = tmp_path / "ledger.msgpack"
    first = LedgerFile(str(path))
    first.lock()
    first.close()
    second = LedgerFile(str(path))
    second.lock()                                      # free again once closed
    second.close()
    with pytest.raises(UsageError, match="it is a directory"):
        LedgerFile(str(tmp_path)).lock()
    with pytest.raises(UsageError, match="no directory"):
        LedgerFile(str(tmp_path / "missing" / "ledger.msgpack")).lock()
    assert not (tmp_path.parent / (tmp_path.name + ".lock")).exists()


@needs_root
def test_root_makes_new_ledger_files_the_agents():
    """An administrator's first replay into the agent's state directory (umask 027): the agent,
    started later as its own user, can still lock and read what root created."""
    top = Path(tempfile.mkdtemp(prefix="egresswatch-ledger-"))      # reachable by the other user
    try:
        top.chmod(0o755)
        state = top / "state"
        state.mkdir()
        os.chown(state, 65534, 65534)
        old = os.umask(0o027)
        try:
            store = LedgerFile(str(state / "ledger.msgpack"))
            store.lock()
            store.save(b"k" * 16, _ledger(3))
            store.close()
        finally:
            os.umask(old)
        for name in ("ledger.msgpack", "ledger.msgpack.lock"):
            assert (state / name).stat().st_uid == 65534, name
        assert stat.S_IMODE((state / "ledger.msgpack.lock").stat().st_mode) == 0o644
        pid = os.fork()
        if pid == 0:                                   # the agent, as its own user
            try:
                os.setgid(65534)
                os.setuid(65534)
                agent = LedgerFile(str(state / "ledger.msgpack"))
                agent.lock()
                os._exit(0 if agent.load()[0] == b"k" * 16 else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_replay_leaves_the_agents_auto_ledger_alone(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    _, out = replay(tmp_path, _uploads(3, 5, 41002))
    assert "in this input" in out and not list((tmp_path / "state").iterdir())
    _, out = replay(tmp_path, _uploads(3, 5, 41002), "--config", str(_toml(tmp_path, 'ledger = ""\n')))
    assert "in this input" in out                      # "" was the first releases' default: off


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra.toml"
    path.write_text(text)
    return path

"""Every capture of the third-party corpus replays: no traceback, no hang, damage reported."""

from __future__ import annotations

import json
import signal

import pytest

from agent.cli import main
from tests.streams import CORPUS, corpus_captures

_PER_FILE_SECONDS = 60


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


@pytest.mark.parametrize("row", corpus_captures() if (CORPUS / "MANIFEST.tsv").is_file() else [],
                         ids=lambda row: row["path_in_corpus"])
def test_corpus_capture_replays_cleanly(row, tmp_path, capsys):
    out = tmp_path / "eve.json"
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(_PER_FILE_SECONDS)
    try:
        status = main(["replay", str(CORPUS / row["path_in_corpus"]), "--eve", str(out), "--progress", "never"])
    except _Hang:
        pytest.fail(f"replay of {row['path_in_corpus']} took more than {_PER_FILE_SECONDS} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert status == 0, err
    assert "Traceback" not in err
    for line in out.read_text().splitlines():
        json.loads(line)                                  # every event is complete JSON
    if "file-damaged" in row["tshark_notes"] or "file-truncated" in row["tshark_notes"]:
        assert "damaged" in err, err


def test_corpus_present_or_skipped_with_reason():
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip("third-party pcap corpus not found at ../shared/corpus; see shared/corpus/README.md")
    assert len(corpus_captures()) > 100

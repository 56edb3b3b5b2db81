"""Test-wide settings: internal errors fail tests instead of being counted and contained; the
agent's per-user and per-service state (rule cache, ledger) stays out of the real home and
service directories."""

import os
import tempfile

os.environ["EGRESSWATCH_STRICT"] = "1"
# One rule cache for the whole run (each rule set compiles once), removed with the run's temp dir.
_CACHE = tempfile.mkdtemp(prefix="egresswatch-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
for _name in ("CACHE_DIRECTORY", "STATE_DIRECTORY", "EGRESSWATCH_RULE_CACHE", "EGRESSWATCH_LEDGER"):
    os.environ.pop(_name, None)


def pytest_unconfigure(config):
    import shutil
    shutil.rmtree(_CACHE, ignore_errors=True)

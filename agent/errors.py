"""Errors that cross module boundaries.

Operator mistakes (missing file, not a capture, bad CIDR, bad config) raise UsageError;
`agent.cli.main` turns it into one line on stderr and exit status 2. Hostile or odd
traffic never raises: it is counted in `Stats.anomalies` instead.
"""


class UsageError(Exception):
    """A problem with what the operator asked for; reported as one line, exit 2."""


class RunError(Exception):
    """The run could not complete for a reason outside the operator's request (a worker died,
    a capture device vanished); reported as one line, exit 1."""

"""Application-layer parsers, one protocol per module.

`PARSERS` maps a detected app_proto to the content extractor the session feeds; a protocol
without an entry is scanned as raw bytes (unless it is ciphertext: see session.py). A new
parser: a module with a class taking `(anomalies)` and offering `feed(direction, data)`,
`gap(direction, nbytes)` and `close()`, each returning `list[Chunk]`; then one entry here.
"""

from __future__ import annotations

from agent.apps.ftp import FtpParser
from agent.apps.http import HttpParser
from agent.apps.smtp import SmtpParser

PARSERS = {
    "ftp": FtpParser,
    "http": HttpParser,
    "smtp": SmtpParser,
}

"""Exporters: where events go. Each has `emit(event)` and `close()`.

eve.py writes EVE JSON lines to a file or stdout; syslog.py and webhook.py are the network alert
sinks, each with an on-disk spool (spool.py) so nothing is lost while the receiver is down. A new
exporter goes in its own module here and is opened by `open_exporters`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agent.config import Config


class Exporter(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def open_exporters(config: Config, *, append: bool) -> list[Exporter]:
    """The EVE writer (replay truncates its file, the live agent appends), then the configured sinks.
    A sink that cannot start closes what was opened before it and raises the UsageError."""
    from agent.exporters.eve import EveWriter

    exporters: list[Exporter] = [EveWriter(config.eve, append=append)]
    try:
        if config.syslog is not None:
            from agent.exporters.syslog import SyslogSink
            exporters.append(SyslogSink(config.syslog))
        if config.webhook is not None:
            from agent.exporters.webhook import WebhookSink
            exporters.append(WebhookSink(config.webhook))
    except BaseException:
        for exporter in exporters:
            exporter.close()
        raise
    return exporters


def spool_directories(exporters: list[Exporter]) -> list[str]:
    """Directories the sinks write to after the agent gives up root (they must belong to --user)."""
    return [exporter.spool.directory for exporter in exporters if hasattr(exporter, "spool")]  # type: ignore[attr-defined]

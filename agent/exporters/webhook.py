"""HTTP webhook sink: one POST per event, body = the EVE JSON object, spooled on disk.

One event per request keeps the receiver contract the same as one EVE line, and makes the
acknowledgement exact: a 2xx answer takes exactly that event out of the spool. Alerts are at most
one per flow, so the rate stays low; the connection is kept alive between requests.

Answers: 2xx = accepted. 400, 413 and 422 = this event can never be accepted: it is dropped and
counted (retrying it would block every later event). Anything else (401/403 while a token is being
fixed, 404, 408, 429, 5xx), a timeout or a connection error = retried with exponential backoff and
jitter, the event staying first in line, so events arrive in order, at least once (a request whose
answer was lost is sent again).

The bearer token goes only into the Authorization header; it is kept out of repr(), errors and logs.
"""

from __future__ import annotations

import http.client
import os
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agent import __version__
from agent.errors import UsageError
from agent.events import dumps
from agent.exporters.spool import DeliveryError, SpooledSink

REFUSED_FOR_GOOD = frozenset({400, 413, 422})
_BATCH_RECORDS = 64           # read from the spool at a time; still one request per event


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    url: str = ""                                    # http:// or https://host[:port]/path
    bearer_token: str = field(default="", repr=False)   # sent as "Authorization: Bearer ..."; "" = none
    tls_ca_file: str = ""                            # CA bundle for https; "" = the system store
    timeout: float = 5.0                             # connect and answer timeout per request, seconds
    retry_initial: float = 0.5                       # first retry delay, doubled per failure up to retry_max
    retry_max: float = 60.0
    spool_dir: str = "/var/lib/egresswatch/spool/webhook"
    spool_limit_bytes: int = 64 << 20
    drain_timeout: float = 5.0                       # seconds close() keeps delivering
    event_types: tuple[str, ...] = ("alert",)
    rate_limit_events: int = 10                      # per (flow_id, event_type) per window; 0 = unlimited
    rate_limit_window: float = 60.0                  # seconds


class WebhookSink(SpooledSink):
    name = "webhook"

    def __init__(self, options: WebhookOptions) -> None:
        parts = urlsplit(options.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"bad webhook url {options.url!r}: want http(s)://host[:port]/path")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"bad webhook url {options.url!r}: port must be 1-65535") from None
        if parts.username or parts.password:
            raise UsageError("webhook url must not hold credentials; use bearer_token")
        if any(c in options.bearer_token for c in "\r\n"):
            raise UsageError("webhook bearer token must be one line")
        self.options = options
        self.host = parts.hostname
        self.port = port
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            if options.tls_ca_file and not os.access(options.tls_ca_file, os.R_OK):
                raise UsageError(f"webhook CA file {options.tls_ca_file} is not readable")
            try:
                self.tls = ssl.create_default_context(cafile=options.tls_ca_file or None)
            except (ssl.SSLError, OSError) as exc:
                raise UsageError(f"webhook CA file not usable: {getattr(exc, 'reason', None) or exc}") from None
        self.headers = {"Content-Type": "application/json", "User-Agent": f"egresswatch/{__version__}"}
        if options.bearer_token:
            self.headers["Authorization"] = f"Bearer {options.bearer_token}"
        super().__init__(spool_dir=options.spool_dir, spool_limit_bytes=options.spool_limit_bytes,
                         drain_timeout=options.drain_timeout, event_types=options.event_types,
                         rate_limit_events=options.rate_limit_events, rate_limit_window=options.rate_limit_window,
                         retry_initial=options.retry_initial, retry_max=options.retry_max,
                         io_timeout=options.timeout)
        self._conn: http.client.HTTPConnection | None = None
        self._start()

    def _deliver(self) -> bool:
        items = self.spool.read(max_records=_BATCH_RECORDS)
        for (_, event), cursor in items:
            if self._closing and time.monotonic() >= self._deadline:
                break
            status = self._post(dumps(event).encode("utf-8"))
            if 200 <= status < 300:
                self.sent += 1
            elif status in REFUSED_FOR_GOOD:
                self.refused += 1
                self.last_error = f"webhook refused an event for good (HTTP {status}); dropped"
            else:
                raise DeliveryError(f"webhook answered HTTP {status}")
            self.spool.commit(cursor)             # this event is done; a failure later resends only later ones
        return bool(items)

    def _post(self, body: bytes) -> int:
        if self._conn is None:
            if self.tls is not None:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.options.timeout,
                                                         context=self.tls)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.options.timeout)
        try:
            self._conn.request("POST", self.path, body, self.headers)
            response = self._conn.getresponse()
            response.read(1 << 16)          # the answer body is not used; read some so keep-alive works
            if response.will_close or not response.isclosed():
                self._disconnect()
            return response.status
        except ssl.SSLError as exc:
            raise DeliveryError(f"webhook TLS failed: {exc.reason or type(exc).__name__}") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else type(exc).__name__
            raise DeliveryError(f"webhook request failed: {reason}") from None

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

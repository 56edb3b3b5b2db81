"""Per-flow application layer: protocol detection by content and protocol metadata.

`AppSession` is the flow's `StreamConsumer`: TCP reassembly hands it each direction's bytes
in order (with explicit gaps); UDP datagrams arrive through `datagram()`. It keeps only
bounded prefixes of each direction for detection (`DETECT_BYTES`) and for the TLS
ClientHello (`MAX_CLIENT_HELLO`). Body extraction and classification plug in here: a
parser for the detected protocol receives the same calls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from agent.apps.detect import detect_tcp, detect_udp
from agent.apps.tls import MAX_CLIENT_HELLO, client_hello_sni
from agent.reassembly import TOCLIENT, TOSERVER

DETECT_BYTES = 4096        # per direction; detection gives up ("failed") past this


class AppSession:
    """Detects app_proto for one flow and keeps what events report about it."""

    __slots__ = ("anomalies", "app_proto", "sni", "gaps", "seen", "_head", "_hello", "_detecting",
                 "_sni_pending")

    def __init__(self, anomalies: Counter[str]) -> None:
        self.anomalies = anomalies
        self.app_proto: str | None = None
        self.sni: str | None = None
        self.gaps = 0
        self.seen = [0, 0]                       # payload bytes delivered per direction
        self._head = [bytearray(), bytearray()]  # first DETECT_BYTES per direction, while detecting
        self._hello = bytearray()                # client bytes until the ClientHello is complete
        self._detecting = True
        self._sni_pending = False

    # -- StreamConsumer ------------------------------------------------------------------

    def data(self, direction: int, data: memoryview | bytes) -> None:
        self.seen[direction] += len(data)
        if self._sni_pending and direction == TOSERVER:
            self._feed_hello(data)
        if self._detecting:
            head = self._head[direction]
            if len(head) < DETECT_BYTES:
                head += data[:DETECT_BYTES - len(head)]
            self._detect()

    def gap(self, direction: int, nbytes: int) -> None:
        self.gaps += 1
        if self._detecting and self._head[direction]:
            # Bytes after a hole are not the continuation of what we were matching on.
            self._stop_detecting(None)
        if direction == TOSERVER and self._sni_pending:
            self._sni_pending = False
            self._hello = bytearray()
            self.anomalies["app.tls.hello_gap"] += 1

    def end(self, direction: int) -> None:
        """Nothing buffered here needs flushing: detection works on prefixes only."""

    def datagram(self, direction: int, payload: memoryview | bytes, sport: int, dport: int) -> None:
        self.seen[direction] += len(payload)
        if self._detecting:
            self._stop_detecting(detect_udp(bytes(payload[:512]), sport, dport))

    # -- results -------------------------------------------------------------------------

    def event_app_proto(self) -> str | None:
        """`app_proto` for the event: the protocol, "failed" when bytes flowed but matched nothing."""
        if self.app_proto is not None:
            return self.app_proto
        return "failed" if self.seen[TOSERVER] or self.seen[TOCLIENT] else None

    def event_fields(self) -> dict[str, Any]:
        if self.sni:
            return {"tls": {"sni": self.sni}}
        return {}

    # -- internals -----------------------------------------------------------------------

    def _detect(self) -> None:
        toserver, toclient = self._head
        result = detect_tcp(bytes(toserver), bytes(toclient))
        if result is None:
            if len(toserver) >= DETECT_BYTES or len(toclient) >= DETECT_BYTES:
                self._stop_detecting(None)
            return
        if result == "tls":
            self._sni_pending = True
            if toserver:
                self._feed_hello(toserver)
        self._stop_detecting(result or None)

    def _stop_detecting(self, app_proto: str | None) -> None:
        self._detecting = False
        self._head = [bytearray(), bytearray()]
        self.app_proto = app_proto
        if app_proto is None:
            self.anomalies["app.detect_failed"] += 1

    def _feed_hello(self, data: memoryview | bytes) -> None:
        hello = self._hello
        hello += data[:MAX_CLIENT_HELLO - len(hello)]
        sni = client_hello_sni(hello)
        if sni is None:
            if len(hello) >= MAX_CLIENT_HELLO:
                self.anomalies["app.tls.hello_too_large"] += 1
                self._sni_pending = False
                self._hello = bytearray()
            return
        self._sni_pending = False
        self._hello = bytearray()
        if sni is not False:
            self.sni = sni

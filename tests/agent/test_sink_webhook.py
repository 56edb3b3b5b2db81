"""HTTP webhook sink against a real http.server on 127.0.0.1 that records bodies and fails on command."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.capture.pcapfile import CaptureFile
from agent.config import Config
from agent.errors import UsageError
from agent.events import dumps
from agent.exporters.webhook import WebhookOptions, WebhookSink
from agent.pipeline import Pipeline
from agent.stats import Stats
from tests.agent.test_sink_spool import alert_events
from tests.streams import PROJECT_ROOT

WAIT = 30.0                  # seconds any wait for deliveries may take before the test fails
TOKEN = "s3cr3t-token-for-tests"


class Receiver:
    """A webhook receiver: records (authorization, body) per request; answers `statuses` first, then 200;
    can be stopped (connections refused) and started again on the same port."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str | None, dict]] = []
        self.answered: list[int] = []
        self.statuses: list[int] = []
        self.tls = tls
        self.port = 0
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"          # keep-alive, as most receivers do

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver.connections.append(self.connection)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.answered.append(status)
                    if status == 200:
                        receiver.requests.append((self.headers.get("Authorization"), json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            with self.lock:
                for connection in self.connections:      # kept-alive connections end too: a real outage
                    try:
                        connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                self.connections.clear()
            self.thread.join(WAIT)
            self.server = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hooks/egresswatch"

    def events(self) -> list[dict]:
        with self.lock:
            return [body for _, body in self.requests]

    def wait_for(self, count: int) -> list[dict]:
        deadline = time.monotonic() + WAIT
        while len(self.events()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.events()


@pytest.fixture
def receiver():
    started = Receiver()
    started.start()
    yield started
    started.stop()


def options(tmp_path: Path, url: str, **overrides) -> WebhookOptions:
    values = {"url": url, "spool_dir": str(tmp_path / "spool"), "spool_limit_bytes": 4 << 20, "retry_initial": 0.02,
              "retry_max": 0.2, "timeout": 2.0, "drain_timeout": WAIT, "rate_limit_events": 0}
    return WebhookOptions(**{**values, **overrides})


def flow_ids(events: list[dict]) -> list[int]:
    return [event["flow_id"] for event in events]


def test_every_alert_arrives_in_order_through_errors_and_an_outage(tmp_path, receiver):
    events = alert_events(90)
    receiver.statuses = [500, 503, 500, 429, 500]
    sink = WebhookSink(options(tmp_path, receiver.url))
    for event in events[:30]:
        sink.emit(event)
    assert len(receiver.wait_for(10)) >= 10
    receiver.stop()                                 # the receiver goes away: connection refused
    for event in events[30:60]:
        sink.emit(event)
    deadline = time.monotonic() + WAIT
    while "request failed" not in sink.stats().last_error and time.monotonic() < deadline:
        time.sleep(0.02)
    receiver.start()                                # back on the same port
    for event in events[60:]:
        sink.emit(event)
    sink.close()

    got = receiver.events()
    assert list(dict.fromkeys(flow_ids(got))) == flow_ids(events)      # all of them, first arrivals in order
    by_id = {event["flow_id"]: event for event in events}
    assert all(body == by_id[body["flow_id"]] for body in got)                # bodies are the events, unchanged
    assert receiver.answered[:5] == [500, 503, 500, 429, 500]
    stats = sink.stats()
    assert stats.sent == len(events) and stats.queue_depth == 0 and stats.dropped == 0
    assert stats.retries >= 6                       # five error answers and at least one refused connection


class Collect:
    """The EVE side of the same run: what every exporter was given."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def emit(self, event: dict) -> None:
        self.events.append(json.loads(dumps(event)))

    def close(self) -> None:
        pass


def test_the_alerts_of_a_replayed_capture_arrive_as_the_eve_output_has_them(tmp_path, receiver):
    collect = Collect()
    sink = WebhookSink(options(tmp_path, receiver.url))
    capture = CaptureFile(str(PROJECT_ROOT / "samples" / "sample-egress.pcap"))
    Pipeline(Config(), [collect, sink], Stats(), strict=True).replay([capture])
    sink.close()
    alerts = [event for event in collect.events if event["event_type"] == "alert"]
    assert alerts                                   # the sample has transfers abroad with personal data
    assert receiver.events() == alerts              # flow events are not for this sink (event_types)


def test_bearer_token_is_sent_and_never_shown(tmp_path, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    receiver.statuses = [500]
    sink = WebhookSink(options(tmp_path, receiver.url, bearer_token=TOKEN))
    for event in alert_events(3):
        sink.emit(event)
    sink.close()
    assert {auth for auth, _ in receiver.requests} == {f"Bearer {TOKEN}"}
    shown = [repr(sink.options), repr(sink.stats()), sink.stats().last_error, caplog.text]
    assert sink.stats().last_error == "webhook answered HTTP 500"
    assert not any(TOKEN in text for text in shown)


def test_an_event_refused_for_good_is_dropped_counted_and_does_not_block_the_rest(tmp_path, receiver):
    events = alert_events(5)
    receiver.statuses = [200, 400]
    sink = WebhookSink(options(tmp_path, receiver.url))
    for event in events:
        sink.emit(event)
    sink.close()
    assert receiver.events() == [events[0], *events[2:]]
    stats = sink.stats()
    assert stats.dropped == 1 and stats.sent == 4 and stats.queue_depth == 0
    assert "HTTP 400" in stats.last_error


def test_close_with_the_receiver_down_keeps_events_for_the_next_start(tmp_path, receiver):
    events = alert_events(20)
    receiver.stop()
    sink = WebhookSink(options(tmp_path, receiver.url, drain_timeout=0.3))
    for event in events:
        sink.emit(event)
    sink.close()                                    # bounded by drain_timeout (+ one request timeout)
    assert sink.stats().queue_depth == 20 and sink.stats().sent == 0
    receiver.start()
    again = WebhookSink(options(tmp_path, receiver.url))
    again.close()
    assert receiver.events() == events
    assert again.stats().sent == 20 and again.stats().queue_depth == 0


def test_emit_returns_while_the_receiver_hangs(tmp_path):
    """A receiver that accepts connections and never answers: emit() only spools, the sender waits."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        sink = WebhookSink(options(tmp_path, f"http://127.0.0.1:{port}/", timeout=1.0, drain_timeout=0.2))
        events = alert_events(100)
        for event in events:
            sink.emit(event)
        assert sink.stats().queue_depth == 100
        sink.close()
    stats = sink.stats()
    assert stats.queue_depth == 100 and stats.sent == 0
    assert stats.last_error in ("", "webhook request failed: TimeoutError")


def test_one_flow_is_rate_limited_and_the_suppressed_events_counted(tmp_path, receiver):
    noisy = alert_events(1)[0]
    others = alert_events(5, first_port=30_000)
    sink = WebhookSink(options(tmp_path, receiver.url, rate_limit_events=10, event_types=("alert", "flow")))
    for i in range(25):
        sink.emit({**noisy, "timestamp": f"2026-01-01T00:00:{i:02d}.000000+0000"})
    for event in others:
        sink.emit(event)
    sink.emit({**noisy, "event_type": "flow"})      # another event type of the same flow has its own budget
    sink.close()
    got = receiver.events()
    assert flow_ids(got).count(noisy["flow_id"]) == 11
    assert [e["timestamp"][17:19] for e in got if e["event_type"] == "alert" and e["flow_id"] == noisy["flow_id"]] \
        == [f"{i:02d}" for i in range(10)]
    assert sink.stats().suppressed == 15 and sink.stats().sent == 16


def test_https_with_a_private_ca(tmp_path):
    pytest.importorskip("cryptography", reason="the cryptography package (a test dependency) makes the certificates")
    from tests.agent.test_sink_syslog import make_pki

    pki = make_pki(tmp_path / "pki")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki["server_cert"], pki["server_key"])
    secure = Receiver(server_tls)
    secure.start()
    try:
        events = alert_events(4)
        sink = WebhookSink(options(tmp_path, secure.url.replace("127.0.0.1", "localhost"),
                                   tls_ca_file=str(pki["ca_cert"])))
        for event in events:
            sink.emit(event)
        sink.close()
        assert secure.events() == events

        untrusted = WebhookSink(options(tmp_path / "other", secure.url, drain_timeout=0.3))   # system CAs only
        untrusted.emit(events[0])
        untrusted.close()
        assert "TLS failed" in untrusted.stats().last_error and untrusted.stats().queue_depth == 1
    finally:
        secure.stop()


def test_bad_options_are_one_line_usage_errors(tmp_path):
    for overrides, message in (({"url": "ftp://example.test/x"}, "bad webhook url"),
                               ({"url": "http://:80/"}, "bad webhook url"),
                               ({"url": "http://127.0.0.1:99999/"}, "port"),
                               ({"url": "http://user:pw@127.0.0.1/"}, "credentials"),
                               ({"url": "https://127.0.0.1/", "tls_ca_file": str(tmp_path / "none.pem")},
                                "not readable"),
                               ({"url": "http://127.0.0.1/", "drain_timeout": -1.0}, "drain_timeout"),
                               ({"url": "http://127.0.0.1/", "bearer_token": "a\nb"}, "one line")):
        with pytest.raises(UsageError, match=message) as caught:
            WebhookSink(options(tmp_path, **overrides))
        assert "\n" not in str(caught.value)

"""Notifications never hold a deploy: one deadline for all webhooks, a bounded read of the
answer, no redirects followed, and a signal during them ends the attempt at once (after
the record and the unlock). Real HTTP servers on loopback."""

from __future__ import annotations

import dataclasses
import http.server
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plainsail.config.model import NotifyTarget
from plainsail.deploy import notify
from plainsail.deploy.outcomes import SUCCEEDED
from plainsail.secret import Secret
from tests.test_engine import V1, Bench


class Hook(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str] = []  # noqa: RUF012 - shared by the test's servers on purpose

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.hits.append(f"POST {self.path}")
        if self.path.startswith("/trickle"):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(400):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path.startswith("/endless"):
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            chunk = b"x" * 65536
            for _ in range(2000):
                self.wfile.write(chunk)
        elif self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", self.headers["X-Elsewhere"] or "/")
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        Hook.hits.append(f"GET {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    srv.daemon_threads = True
    srv.handle_error = lambda *args: None  # type: ignore[method-assign]  # a cut-off client
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    Hook.hits = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def targets(*urls: str) -> list[NotifyTarget]:
    return [NotifyTarget(Secret(u)) for u in urls]


def test_a_trickling_webhook_is_left_behind_within_the_deadline(hook: str) -> None:
    start = time.monotonic()
    warnings = notify.send(targets(f"{hook}/trickle-token", f"{hook}/trickle-2"),
                           {"outcome": "succeeded"}, timeout=0.8, deadline=1.2)
    assert time.monotonic() - start < 2.0
    assert len(warnings) == 2 and "did not answer within 0.8s" in warnings[0]
    assert "used up" in warnings[1] or "did not answer" in warnings[1]
    assert not any("token" in w for w in warnings)


def test_an_endless_answer_is_read_only_in_part(hook: str) -> None:
    assert notify.send(targets(f"{hook}/endless"), {"outcome": "succeeded"}, timeout=3) == []


def test_a_redirect_is_not_followed(hook: str) -> None:
    warnings = notify.send(targets(f"{hook}/moved-token"), {"outcome": "succeeded"})
    assert warnings == ["notify[0]: the webhook answered 302 (a redirect, not followed); "
                        "the deploy is unaffected"]
    assert Hook.hits == ["POST /moved-token"]  # no GET anywhere


def test_a_signal_during_the_notifications_ends_the_attempt_after_the_record(
        tmp_path: Path, hook: str) -> None:
    b = Bench(tmp_path)
    b.cfg = dataclasses.replace(b.cfg, notify=targets(f"{hook}/trickle"))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    start = time.monotonic()
    timer.start()
    s = b.deploy(V1)
    took = time.monotonic() - start
    timer.join()
    assert s["outcome"] == SUCCEEDED
    assert took < 3.0, took  # not the notification's 5 s
    assert any(line.startswith("warning: notifications cut short by a signal")
               for line in b.lines)
    assert b.fake.history("api")[-1]["outcome"] == SUCCEEDED and not b.fake.locked("api")

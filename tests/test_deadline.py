"""One deadline per HTTP exchange: an answer that trickles (a byte at a time, each read
well within any per-read timeout) is cut off at the deadline, in the health gate's GET
and in the check through the proxy's helper alike. Real sockets on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from plainsail.config.model import HealthConfig
from plainsail.deploy import health
from plainsail.hosts.addresses import parse_host
from plainsail.hosts.executor import LocalExecutor


def trickle_server(head: bytes, every: float = 0.05) -> tuple[int, Iterator[None]]:
    """A server that answers `head` a byte every `every` seconds, then an endless body the
    same way; one thread per connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(4096)
                for byte in head:
                    conn.sendall(bytes([byte]))
                    time.sleep(every)
                while not stop.is_set():
                    conn.sendall(b"x")
                    time.sleep(every)
            except OSError:
                pass

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def done() -> Iterator[None]:
        yield
        stop.set()
        t.join(5)
        srv.close()

    return srv.getsockname()[1], done()


@pytest.fixture
def trickling_headers() -> Iterator[int]:
    port, done = trickle_server(b"HTTP/1.1 200 OK\r\nX-Slow: ", 0.05)
    next(done)
    yield port
    next(done, None)


@pytest.fixture
def trickling_body() -> Iterator[int]:
    port, done = trickle_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", 0.005)
    next(done)
    yield port
    next(done, None)


@pytest.mark.parametrize("which", ["trickling_headers", "trickling_body"])
def test_one_get_is_bounded_as_a_whole(which: str, request: pytest.FixtureRequest) -> None:
    port = request.getfixturevalue(which)
    ex = LocalExecutor(parse_host("local"))
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        ex.http_get("127.0.0.1", port, "/health", 0.6)
    assert time.monotonic() - start < 1.5


def test_the_gate_takes_attempts_times_timeout_plus_interval(trickling_body: int) -> None:
    ex = LocalExecutor(parse_host("local"))
    hc = HealthConfig(path="/health", attempts=3, interval=0.1, timeout=0.4)
    states = iter([("running", 0)] * 5)
    start = time.monotonic()
    verdict = health.gate(ex, hc, ("127.0.0.1", trickling_body), "c", sleep=time.sleep,
                          state=lambda ex, name: next(states))
    took = time.monotonic() - start
    assert not verdict.healthy and "timed out" in verdict.reason
    assert len(verdict.attempts) == 3
    assert took < 3 * (0.4 + 0.1) + 0.8

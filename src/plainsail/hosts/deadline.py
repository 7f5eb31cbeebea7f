"""One deadline for a whole HTTP exchange, not for each read.

A socket timeout bounds each read: an answer that trickles one byte a second never trips
it. `watchdog` shuts the socket down when the deadline passes, which ends any read in
progress at once; the caller then reports a timeout.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


@contextmanager
def watchdog(sock: socket.socket, seconds: float) -> Iterator[threading.Event]:
    """Shut `sock` down after `seconds`; the event says whether that happened."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(seconds, 0.0), fire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str],
        timeout: float, limit: int = 64 * 1024
        ) -> tuple[http.client.HTTPResponse, bytes]:
    """GET `path` on `conn` (connected or not), the answer and at most `limit` bytes of its
    body, all within `timeout` seconds (TimeoutError after)."""
    start = time.monotonic()
    if conn.sock is None:
        conn.connect()  # bounded by the connection's own timeout
    assert conn.sock is not None
    left = timeout - (time.monotonic() - start)
    with watchdog(conn.sock, left) as fired:
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read(limit)
        except (OSError, http.client.HTTPException):
            if fired.is_set():
                raise TimeoutError(f"the whole answer did not arrive within {timeout:g}s"
                                   ) from None
            raise
        if fired.is_set():
            raise TimeoutError(f"the whole answer did not arrive within {timeout:g}s")
    return resp, body

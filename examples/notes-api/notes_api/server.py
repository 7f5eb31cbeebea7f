"""The HTTP server: standard library only, one log line per request, clean SIGTERM.

Endpoints:
  GET  /health   200 when a real query works and the schema is new enough, else 503
  GET  /version  the app version and the schema it needs
  GET  /notes    the newest notes
  POST /notes    add a note: {"text": "...", "tags": ["optional", "list"]}

Settings come from the environment: PORT (default 8080), HOST (default 0.0.0.0),
DATABASE_URL, APP_VERSION (default from version.py) and LOG_LEVEL (default info).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from notes_api import version
from notes_api.db import Database, DatabaseError, schema_number

log = logging.getLogger("notes_api")
MAX_BODY = 64 * 1024
MAX_TEXT = 10_000


class App:
    """What the handlers need: settings and the database."""

    def __init__(self, env: dict[str, str] | os._Environ[str]) -> None:
        self.version = env.get("APP_VERSION") or version.APP_VERSION
        self.required_schema = version.REQUIRED_SCHEMA
        self.db = Database(env.get("DATABASE_URL"))

    def health(self) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"status": "ok", "database": "ok", "schema": None,
                                "version": self.version}
        try:
            schema = self.db.schema_version()
        except DatabaseError as exc:
            body.update(status="error", database=f"error: {exc}")
            return 503, body
        body["schema"] = schema
        need = schema_number(self.required_schema) or 0
        have = schema_number(schema) if schema is not None else None
        if have is None or have < need:
            body.update(
                status="error",
                database=f"error: schema {schema or 'none'} is older than the "
                f"{self.required_schema} this version needs; run the migrations",
            )
            return 503, body
        return 200, body


class Handler(BaseHTTPRequestHandler):
    server_version = "notes-api"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds an idle keep-alive connection may hold a thread
    app: App  # set on the subclass made by make_server

    # ------------------------------------------------------------ routing

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        path = self.path.split("?", 1)[0]
        if path == "/health":
            status, body = self.app.health()
            self.reply(status, body)
        elif path == "/version":
            self.reply(200, {"version": self.app.version,
                             "required_schema": self.app.required_schema})
        elif path == "/notes":
            try:
                self.reply(200, {"notes": self.app.db.list_notes()})
            except DatabaseError as exc:
                log.error("GET /notes: %s", exc)
                self.reply(503, {"error": "database unavailable"})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path != "/notes":
            known = path in ("/health", "/version")
            self.reply(405 if known else 404, {"error": "method not allowed" if known
                                               else "not found"})
            return
        data = self.read_json()
        if data is None:
            return
        text, tags = data.get("text"), data.get("tags", [])
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            self.reply(400, {"error": f"text must be a non-empty string of at most "
                                      f"{MAX_TEXT} characters"})
            return
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            self.reply(400, {"error": "tags must be a list of strings"})
            return
        try:
            self.reply(201, self.app.db.add_note(text, tags))
        except DatabaseError as exc:
            log.error("POST /notes: %s", exc)
            self.reply(503, {"error": "database unavailable"})

    # ------------------------------------------------------------ helpers

    def read_json(self) -> dict[str, Any] | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.reply(400, {"error": f"send a JSON body of at most {MAX_BODY} bytes"})
            return None
        try:
            data = json.loads(self.rfile.read(length) or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            self.reply(400, {"error": 'send a JSON object such as {"text": "hello"}'})
            return None
        return data

    def reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        elapsed = (time.monotonic() - getattr(self, "_started", time.monotonic())) * 1000
        status = code.value if isinstance(code, HTTPStatus) else code
        log.info('%s "%s %s" %s %.1fms', self.client_address[0], self.command,
                 self.path, status, elapsed)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.warning("%s %s", self.client_address[0], format % args)

    def handle_one_request(self) -> None:
        self._started = time.monotonic()
        super().handle_one_request()


def make_server(app: App, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> int:
    level = logging.getLevelName((os.environ.get("LOG_LEVEL") or "info").upper())
    logging.basicConfig(
        stream=sys.stdout,
        level=level if isinstance(level, int) else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    app = App(os.environ)
    host = os.environ.get("HOST") or "0.0.0.0"  # noqa: S104 (a server in a container)
    port = int(os.environ.get("PORT") or 8080)
    server = make_server(app, host, port)

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("notes-api %s listening on %s:%d (needs schema %s)", app.version, host, port,
             app.required_schema)
    server.serve_forever()
    server.server_close()
    log.info("stopped")
    return 0

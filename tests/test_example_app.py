"""The example app (examples/notes-api) as the deploy tests and the demo use it: its image
builds offline on the local base image, /health runs a real query and checks the schema,
notes round-trip through PostgreSQL, and a wrong DATABASE_URL gives 503 without the password."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.notes_app import EXAMPLE_DIR, TEST_LABEL, Database, unique
from tests.support.services import free_port

sys.path.insert(0, str(EXAMPLE_DIR))
from notes_api import version  # noqa: E402
from notes_api.db import Database as AppDatabase  # noqa: E402
from notes_api.db import schema_number  # noqa: E402
from notes_api.server import App  # noqa: E402

# ---------------------------------------------------------------- no services needed


def test_schema_numbers_compare_as_numbers() -> None:
    assert schema_number("0002") == 2
    assert schema_number("0010_add_index") == 10
    assert schema_number("latest") is None
    assert schema_number(version.REQUIRED_SCHEMA) is not None


def test_failure_descriptions_hide_the_url_and_password() -> None:
    url = "postgresql://notes:p%40ss-w0rd-xyz@db.invalid:5432/notes"
    db = AppDatabase(url)
    text = db.describe(RuntimeError(f"cannot use {url}: bad p@ss-w0rd-xyz"))
    assert "w0rd" not in text and url not in text
    assert text == "cannot use ***: bad ***"


def test_health_without_database_url_says_so() -> None:
    status, body = App({}).health()
    assert status == 503
    assert body["database"] == "error: DATABASE_URL is not set"
    assert body["version"] == version.APP_VERSION


def test_health_with_a_malformed_url_does_not_echo_it() -> None:
    status, body = App({"DATABASE_URL": "notes s3cret-token-abc"}).health()
    assert status == 503
    assert body["database"].startswith("error: DATABASE_URL is not a valid connection string")
    assert "s3cret" not in json.dumps(body)


def test_app_version_comes_from_the_environment_first() -> None:
    assert App({"APP_VERSION": "abc1234"}).version == "abc1234"
    assert App({}).version == version.APP_VERSION


# ---------------------------------------------------------------- the real image


def _get(url: str, data: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Running:
    """A container of the example image on the host network, with a free port."""

    def __init__(self, image: str, env: dict[str, str]) -> None:
        self.name = unique("plainsail-test-notes")
        self.port = free_port()
        argv = ["docker", "run", "-d", "--name", self.name, "--network", "host",
                "--label", f"{TEST_LABEL}=notes-api", "-e", f"PORT={self.port}"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        subprocess.run([*argv, image], check=True, capture_output=True, text=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_answering(self, timeout: float = 20) -> tuple[int, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return _get(self.base + "/health")
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no answer on {self.base}:\n{self.logs()}") from None
                time.sleep(0.1)

    def logs(self) -> str:
        out = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return out.stdout + out.stderr

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)


@pytest.fixture
def containers() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for c in started:
        c.remove()


@pytest.mark.integration
def test_image_serves_notes_from_postgres(
    notes_image: str, notes_database: Database, containers: list[Running]
) -> None:
    applied = notes_database.apply_migrations()
    assert applied == sorted(p.name for p in (EXAMPLE_DIR / "migrations").glob("*.sql"))
    app = Running(notes_image, {"DATABASE_URL": notes_database.url, "APP_VERSION": "t1"})
    containers.append(app)

    status, body = app.wait_answering()
    assert status == 200, app.logs()
    assert body == {"status": "ok", "database": "ok", "schema": version.REQUIRED_SCHEMA,
                    "version": "t1"}
    # The form the deploy's health gate looks for, byte for byte.
    with urllib.request.urlopen(app.base + "/health", timeout=5) as response:
        assert b'"database": "ok"' in response.read()

    status, note = _get(app.base + "/notes", {"text": "ship it", "tags": ["boring"]})
    assert status == 201
    assert note["text"] == "ship it" and note["tags"] == ["boring"]
    status, listing = _get(app.base + "/notes")
    assert status == 200 and [n["id"] for n in listing["notes"]] == [note["id"]]
    assert notes_database.query("SELECT text FROM notes") == "ship it"
    assert _get(app.base + "/notes", {"nope": 1})[0] == 400
    assert _get(app.base + "/version")[1] == {"version": "t1",
                                              "required_schema": version.REQUIRED_SCHEMA}

    # One log line per request, on stdout.
    assert '"POST /notes" 201' in app.logs()

    # PID 1 handles SIGTERM itself: docker stop takes far less than the 10 s grace period.
    started = time.monotonic()
    subprocess.run(["docker", "stop", "-t", "10", app.name], check=True, capture_output=True)
    assert time.monotonic() - started < 5
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", app.name],
                           capture_output=True, text=True).stdout.strip()
    assert state == "0"


@pytest.mark.integration
def test_health_fails_until_the_schema_is_new_enough(
    notes_image: str, notes_database: Database, containers: list[Running]
) -> None:
    app = Running(notes_image, {"DATABASE_URL": notes_database.url})
    containers.append(app)
    status, body = app.wait_answering()
    assert status == 503
    assert body["database"].startswith("error: schema none is older than")

    notes_database.apply_migrations()
    status, body = _get(app.base + "/health")
    assert (status, body["database"]) == (200, "ok")


@pytest.mark.integration
def test_wrong_database_url_gives_503_without_the_password(
    notes_image: str, notes_database: Database, containers: list[Running]
) -> None:
    notes_database.apply_migrations()
    password = "wrong-" + unique("pw")
    url = notes_database.url_with(password=password)
    app = Running(notes_image, {"DATABASE_URL": url})
    containers.append(app)

    status, body = app.wait_answering()
    assert status == 503
    assert body["status"] == "error"
    assert body["database"].startswith("error: ")
    assert "password authentication failed" in body["database"]
    raw = json.dumps(body)
    assert password not in raw and url not in raw
    status, body = _get(app.base + "/notes")
    assert status == 503 and password not in json.dumps(body)
    assert password not in app.logs()

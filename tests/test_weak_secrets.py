"""Weak secrets: redaction keeps public names readable and never cuts into words, and
`config check` and the deploy's preflight warn about short secrets and secrets that occur
in public names, naming the secret, never its value."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plainsail import secret as secretlib
from plainsail.secret import Secret, declare_public, scrub, weakness
from tests.support.cli import plainsail
from tests.test_logs_history import _offline_project


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    secretlib.forget_all()
    yield
    secretlib.forget_all()


def test_a_secret_equal_to_a_public_name_leaves_the_name_readable() -> None:
    declare_public(["notes-api"])
    Secret("notes-api")
    line = "notes-api  3f2a9c1e  running  (container notes-api-3f2a9c1e)"
    assert scrub(line) == line


def test_a_database_password_equal_to_its_user_leaves_errors_readable() -> None:
    Secret("postgresql://postgres:postgres@db.internal:5432/notes")
    err = 'connection to server at "db.internal" failed: password authentication ' \
          'failed for user "postgres" (database notes)'
    assert scrub(err) == err
    # The URL itself is still a secret as a whole.
    assert scrub("DATABASE_URL=postgresql://postgres:postgres@db.internal:5432/notes") \
        == "DATABASE_URL=***"


def test_stars_never_cut_into_a_word() -> None:
    Secret("gres")  # short: a whole word only
    assert scrub("postgres is up; the key is gres.") == "postgres is up; the key is ***."
    Secret("s3cr3t-token-long")  # long: wherever it occurs
    assert scrub("Bearer xs3cr3t-token-longx") == "Bearer x***x"


def test_a_secret_containing_a_public_name_is_still_redacted_whole() -> None:
    declare_public(["notes-api"])
    Secret("notes-api-pw-0123456789")
    assert scrub("login notes-api-pw-0123456789 for notes-api") == "login *** for notes-api"


def test_overlapping_secrets_leave_nothing_behind() -> None:
    Secret("abcdefgh12")
    Secret("gh12ijklmn")
    assert scrub("[abcdefgh12ijklmn]") == "[***]"


def test_weakness_names_the_reason_never_the_value() -> None:
    declare_public(["notes-api", "deploy"])
    assert weakness("Zq8#fK2!mW9@xR4$") is None
    short = weakness("hunter2")
    assert short and "shorter than 8" in short and "hunter2" not in short
    public = weakness("notes")
    assert public and "public name" in public and "notes" not in public


CONFIG = ("service: notes-api\nimage: 127.0.0.1:5000/acme/notes-api\nhosts: [local]\n"
          "registry:\n  username: deploy\n  password: ${REG_PW}\n"
          "app:\n  secrets: [DATABASE_URL, API_TOKEN, SERVICE_KEY]\n")


def test_config_check_warns_about_weak_secrets_and_shows_names(tmp_path: Path) -> None:
    (tmp_path / "plainsail.yml").write_text(CONFIG)
    env = {"REG_PW": "Zq8fK2mW9xR4-long-enough",
           "DATABASE_URL": "postgresql://postgres:postgres@db:5432/notes",
           "API_TOKEN": "abc123", "SERVICE_KEY": "notes-api"}
    r = plainsail("config", "check", cwd=tmp_path, env=env)
    assert r.code == 0, r.text
    assert "service: notes-api" in r.out and "image: 127.0.0.1:5000/acme/notes-api" in r.out
    warnings = [line for line in r.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, r.err
    assert "app.secrets DATABASE_URL is a weak secret: it occurs in a public name" in r.err
    assert "app.secrets API_TOKEN is a weak secret: it is shorter than 8" in r.err
    assert "app.secrets SERVICE_KEY is a weak secret: it occurs in a public name" in r.err
    assert "registry.password" not in r.err
    assert "abc123" not in r.text


def test_history_shows_host_and_user_names_a_secret_equals(tmp_path: Path) -> None:
    folder = _offline_project(tmp_path)
    cfg = folder / "plainsail.yml"
    cfg.write_text(cfg.read_text() + "app:\n  secrets: [DB_PASSWORD]\n")
    r = plainsail("history", "--source", "local", cwd=folder, env={"DB_PASSWORD": "deploy"})
    assert r.code == 0, r.text
    assert "***" not in r.out and "ssh://deploy@127.0.0.1" in r.out, r.out


def test_the_deploy_preflight_warns_and_keeps_the_service_name_readable(
        tmp_path: Path) -> None:
    from tests.test_engine import V1, Bench

    b = Bench(tmp_path, env={"DATABASE_URL": "postgresql://api:api@db/app"})
    s = b.deploy(V1)
    assert s["outcome"] == "succeeded"
    err = "\n".join(b.lines)  # the reporter's lines: warnings among them
    assert "warning: app.secrets DATABASE_URL is a weak secret: it occurs in a public " \
           "name" in err
    # What reaches the terminal (say() scrubs each line) keeps the service name.
    assert scrub("api-a1a1a1a1 running (api)") == "api-a1a1a1a1 running (api)"
    assert scrub("postgresql://api:api@db/app") == "***"

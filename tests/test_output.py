"""The output boundary: JSON mode keeps stdout for one JSON document, GitHub Actions
workflow commands go to stderr then, and every line leaving the program is redacted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plainsail import output
from plainsail.secret import Secret
from tests.support.cli import plainsail

CONFIG = ("service: api\nimage: 127.0.0.1:1/acme/api\nhosts: [local]\n"
          "app:\n  secrets: [DATABASE_URL]\n")


def test_json_mode_sends_human_lines_and_annotations_to_stderr(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    output.set_json_mode(True)
    try:
        output.say("progress")
        output.gha_group("host")
        output.gha_endgroup()
        output.gha_error("failed")
        output.warn("careful")
        output.print_json({"outcome": "aborted"})
    finally:
        output.set_json_mode(False)
    out, err = capsys.readouterr()
    assert json.loads(out) == {"outcome": "aborted"}
    assert "::group::host" in err and "::endgroup::" in err and "::error::failed" in err
    assert "progress" in err and "::warning::careful" in err


def test_lines_leaving_the_program_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    Secret("s3cr3t-token")
    output.say("token is s3cr3t-token")
    output.warn("token is s3cr3t-token")
    out, err = capsys.readouterr()
    assert "s3cr3t-token" not in out + err and out.strip() == "token is ***"


@pytest.mark.parametrize("command", ["deploy", "rollback"])
def test_json_is_one_object_with_an_outcome_even_when_preflight_fails(
        tmp_path: Path, command: str) -> None:
    (tmp_path / "plainsail.yml").write_text(CONFIG)
    r = plainsail(command, "--json", cwd=tmp_path,
                  env={"GITHUB_ACTIONS": "true", "DATABASE_URL": ""})
    assert r.code != 0
    doc = json.loads(r.out)  # exactly one JSON document, nothing else
    assert doc["outcome"] == "aborted" and doc["kind"] == command
    assert r.err.startswith("error: ") and "Traceback" not in r.err, r.err


def test_json_when_the_config_is_broken(tmp_path: Path) -> None:
    (tmp_path / "plainsail.yml").write_text("service: [\n")
    r = plainsail("deploy", "--json", cwd=tmp_path, env={"GITHUB_ACTIONS": "true"})
    assert r.code == 1 and json.loads(r.out)["outcome"] == "aborted"
    assert "not valid YAML" in r.err


def test_main_leaves_no_json_mode_behind(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`main(["... --json"])` called in-process (tests, embedding) must not send the human
    lines of whatever runs next to stderr."""
    import sys

    from plainsail.cli import main

    assert main(["verify", "--json", "-c", str(tmp_path / "missing.yml")]) != 0
    assert output.human() is sys.stdout
    capsys.readouterr()

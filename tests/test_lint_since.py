"""`--since REF` lints only the files added since REF, in a real temporary git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from plainsail.errors import GitError
from plainsail.lint.sources import added_since

pytest.importorskip("pglast")


@pytest.fixture(autouse=True)
def _own_lint_cache(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAINSAIL_LINT_CACHE", str(tmp_path_factory.mktemp("lint-cache")))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "dev@example.com")
    git(tmp_path, "config", "user.name", "Dev")
    mig = tmp_path / "migrations"
    mig.mkdir()
    (mig / "0001_a.sql").write_text("CREATE TABLE a (x int);\n")
    (tmp_path / "other.sql").write_text("SELECT 1;\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    git(tmp_path, "tag", "v1")
    return tmp_path


def test_picks_files_added_since_the_ref(repo: Path, monkeypatch) -> None:
    mig = repo / "migrations"
    (mig / "0002_b.sql").write_text("DROP TABLE a;\n")
    (mig / "0003_c.sql").write_text("CREATE TABLE c (x int);\n")
    (mig / "notes.txt").write_text("not sql\n")
    (mig / "0001_a.sql").write_text("CREATE TABLE a (x bigint);\n")  # modified, not added
    (repo / "elsewhere.sql").write_text("SELECT 2;\n")  # added outside the folder
    git(repo, "add", "migrations/0002_b.sql", "elsewhere.sql")
    git(repo, "commit", "-qm", "second")
    # 0003 is untracked: a new file is what the next deploy applies, committed or not.
    monkeypatch.chdir(repo)
    assert [p.name for p in added_since("v1", ["migrations"])] == ["0002_b.sql", "0003_c.sql"]
    assert [p.name for p in added_since("HEAD", ["migrations"])] == ["0003_c.sql"]
    # from a subfolder too
    monkeypatch.chdir(mig)
    assert [p.name for p in added_since("v1", ["."])] == ["0002_b.sql", "0003_c.sql"]


def test_cli_since_exit_status(repo: Path, monkeypatch, capsys) -> None:
    from plainsail.cli import main

    monkeypatch.chdir(repo)
    (repo / "migrations" / "0002_b.sql").write_text("DROP TABLE a;\n")
    assert main(["lint", "migrations", "--since", "v1"]) == 1
    assert "migrations/0002_b.sql:1: error drop-table" in capsys.readouterr().out
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "drop a")
    assert main(["lint", "migrations", "--since", "HEAD"]) == 0
    assert "0 file(s) checked" in capsys.readouterr().out


def test_unknown_ref_is_a_clear_error(repo: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo)
    with pytest.raises(GitError, match="--since nope: git cannot find that commit"):
        added_since("nope", ["migrations"])

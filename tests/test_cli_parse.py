"""The CLI builds only the named command's arguments; it must read the same command
argparse does, whatever comes before it."""

from __future__ import annotations

import pytest

from plainsail import cli


@pytest.mark.parametrize(("argv", "named"), [
    (["lint", "migrations", "x"], "lint"),
    (["-v", "lint", "migrations"], "lint"),
    (["-c", "lint", "deploy", "--yes"], "deploy"),  # "lint" is the config file's name
    (["--config", "deploy", "lint"], "lint"),
    (["--config=deploy", "lint"], "lint"),
    (["--version"], None),
    (["nonsense", "lint"], None),
    ([], None),
])
def test_command_named(argv: list[str], named: str | None) -> None:
    assert cli._command_named(argv) == named


def test_partial_parser_reads_what_the_full_one_reads() -> None:
    argv = ["-c", "lint", "lint", "migrations", "a", "b", "--format", "json"]
    partial = cli.build_parser(cli._command_named(argv)).parse_args(argv)
    full = cli.build_parser().parse_args(argv)
    assert vars(partial) == vars(full)
    assert (partial.config, partial.paths, partial.format) == ("lint", ["a", "b"], "json")


def test_lint_runs_without_logging(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plainsail.commands import lint

    assert lint.LOGS is False
    called: list[bool] = []
    monkeypatch.setattr(cli, "setup_logging", lambda verbose: called.append(verbose))
    (tmp_path / "0001_a.sql").write_text("SELECT 1;\n")
    assert cli.main(["lint", "migrations", str(tmp_path)]) == 0
    assert called == []
    # Any other command still sets it up (here one that then fails on a missing file).
    cli.main(["config", "check", "-c", str(tmp_path / "missing.yml")])
    assert called == [False]

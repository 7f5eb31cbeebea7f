"""Hostile input ends in one clear line, in time linear in its size: bounded reads, JSON and
YAML of bounded depth, YAML aliases of bounded expansion (the audit reads them; config check
refuses them). Size and time figures are in bench/input_bench.py, not here."""

from __future__ import annotations

from pathlib import Path

import pytest

from plainsail.audit import audit, yamldoc
from plainsail.audit.files import dockerfile
from plainsail.inputs import (
    InputError,
    TooLarge,
    YamlRefused,
    compose_yaml,
    json_depth,
    loads_json,
    read_bounded,
)
from tests.support.cli import plainsail


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def sparse(path: Path, size: int) -> Path:
    """A file of `size` NUL bytes that takes no room (and no time to write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
    return path


# ---------------------------------------------------------------- the readers


@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('["[[[", "\\"[[", "]]]]"]', 1),
    ('{"k\\\\": [[]]}', 3), ("[" * 5000 + "]" * 5000, 5000),
    ('["[", "", "]", "", "{\\"[", ["]]"]]', 2), ('[""]', 1), ('["\\\\", ["\\\\\\""]]', 2),
])
def test_json_depth_counts_outside_strings(text: str, depth: int) -> None:
    assert json_depth(text) == depth
    assert json_depth(text.encode()) == depth


def test_loads_json_refuses_deep_nesting_before_parsing() -> None:
    assert isinstance(loads_json("[" * 64 + "]" * 64), list)
    with pytest.raises(InputError, match="nested 100000 levels deep, more than the 64"):
        loads_json("[" * 100_000)
    with pytest.raises(ValueError):
        loads_json("[NaN]")


def test_read_bounded_reads_no_more_than_the_limit(tmp_path: Path) -> None:
    small = write(tmp_path, "small", "abc")
    assert read_bounded(small, 3) == b"abc"
    with pytest.raises(TooLarge, match="larger than 2 bytes"):
        read_bounded(small, 2)
    with pytest.raises(TooLarge, match="larger than 1 MiB"):
        read_bounded(sparse(tmp_path / "huge", 10 * 1024**3), 1024 * 1024)


def test_compose_yaml_refuses_depth_and_optionally_aliases() -> None:
    with pytest.raises(YamlRefused, match="nested more than 50 levels deep") as err:
        compose_yaml("a:\n  " + "[" * 5000 + "]" * 5000 + "\n")
    assert err.value.line == 2
    assert compose_yaml("a: &x 1\nb: *x\n") is not None
    with pytest.raises(YamlRefused, match="^line 1: no aliases here$"):
        compose_yaml("a: &x 1\nb: *x\n", aliases=False, no_aliases="no aliases here")


# ---------------------------------------------------------------- the audit's YAML

BOMB = "on: push\n" + "".join(
    f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}" if i else "lol"] * 9) + "]\n"
    for i in range(10)) + "jobs:\n  a:\n    runs-on: ubuntu-latest\n    steps: *x9\n"


def test_alias_bomb_is_refused_not_expanded(tmp_path: Path) -> None:
    with pytest.raises(yamldoc.YamlError, match="alias bomb"):
        yamldoc.load(BOMB)
    write(tmp_path, ".github/workflows/bomb.yml", BOMB)
    write(tmp_path, "plainsail.yml", BOMB.replace("on: push\n", ""))
    report = audit(tmp_path)
    assert sorted((f.rule, f.path) for f in report.findings) == [
        ("unreadable-file", ".github/workflows/bomb.yml"), ("unreadable-file", "plainsail.yml")]


def test_aliases_in_use_are_read_as_written_out(tmp_path: Path) -> None:
    steps = ("      - uses: appleboy/ssh-action@v1.0.3\n"
             "        with:\n          key: ${{ secrets.KEY }}\n")
    anchored = ("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps: &s\n"
                + steps + "  b:\n    runs-on: ubuntu-latest\n    steps: *s\n")
    plain = ("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n" + steps
             + "  b:\n    runs-on: ubuntu-latest\n    steps:\n" + steps)
    write(tmp_path / "x", ".github/workflows/w.yml", anchored)
    write(tmp_path / "y", ".github/workflows/w.yml", plain)
    found_x = sorted((f.rule, f.line) for f in audit(tmp_path / "x").findings)
    found_y = sorted((f.rule, f.line) for f in audit(tmp_path / "y").findings)
    assert ("secrets-without-environment", 3) in found_x
    assert ("secrets-without-environment", 9) in found_x
    assert {r for r, _ in found_x} == {r for r, _ in found_y}


def test_alias_chain_cannot_nest_past_the_depth_limit() -> None:
    chain = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 200))
    with pytest.raises(yamldoc.YamlError, match="more than 50 levels deep"):
        yamldoc.load(chain)


def test_alias_of_a_large_scalar_is_bounded_by_text() -> None:
    big = "v: &v " + "a" * 200_000 + "\nw: [" + ", ".join(["*v"] * 60) + "]\n"
    with pytest.raises(yamldoc.YamlError, match="alias bomb"):
        yamldoc.load(big)


def test_deeply_nested_workflow_is_a_finding(tmp_path: Path) -> None:
    write(tmp_path, ".github/workflows/deep.yml",
          "on: push\njobs: " + "[" * 1000 + "]" * 1000 + "\n")
    report = audit(tmp_path)
    assert [(f.rule, f.line) for f in report.findings] == [("unreadable-file", 2)]
    assert "nested more than 50 levels deep" in report.findings[0].message


def test_oversized_files_are_findings_and_not_read(tmp_path: Path) -> None:
    sparse(tmp_path / ".github/workflows/huge.yml", 50 * 1024**2)
    sparse(tmp_path / "plainsail.yml", 50 * 1024**2)
    sparse(tmp_path / "Dockerfile", 50 * 1024**2)
    report = audit(tmp_path)
    assert sorted((f.rule, f.path, f.message) for f in report.findings) == [
        ("unreadable-file", ".github/workflows/huge.yml",
         "larger than 1 MiB; not audited (the audit reads files of at most that size)"),
        ("unreadable-file", "Dockerfile",
         "larger than 4 MiB; not audited (the audit reads files of at most that size)"),
        ("unreadable-file", "plainsail.yml",
         "larger than 1 MiB; not audited (the audit reads files of at most that size)"),
    ]


def test_dockerfile_continuations_are_joined_as_before() -> None:
    text = "ARG V=3.12\nFROM \\\n  python:${V} \\\n  AS build\nRUN a \\\n  b\nFROM build\n"
    assert [(f.line, f.message.split(" uses")[0]) for f in dockerfile("Dockerfile", text)] \
        == [(2, "FROM python:3.12")]


def test_cli_audit_of_an_alias_bomb_is_one_finding_exit_1(tmp_path: Path) -> None:
    write(tmp_path, ".github/workflows/bomb.yml", BOMB)
    result = plainsail("audit", str(tmp_path), timeout=60)
    assert result.code == 1
    assert "unreadable-file" in result.out and "alias bomb" in result.out


# ---------------------------------------------------------------- the migration lint


def _sum(terms: int) -> str:
    return "SELECT " + "+".join(["1"] * terms) + ";\n"


def test_lint_of_a_deeply_nested_expression_is_one_finding() -> None:
    pytest.importorskip("pglast")
    from plainsail.lint.engine import analyze

    found = analyze(_sum(600)).findings
    assert [(f.rule, f.line) for f in found] == [("parse-error", 1)]
    assert "parse tree is nested 1209 levels deep, more than the 300" in found[0].message
    assert not [f for f in analyze(_sum(140)).findings if f.rule == "parse-error"]


def test_cli_lint_of_a_deeply_nested_expression_exits_1(tmp_path: Path) -> None:
    pytest.importorskip("pglast")
    write(tmp_path, "migrations/0001_sum.sql", _sum(600))
    result = plainsail("lint", "migrations", str(tmp_path / "migrations"), timeout=60,
                       env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.code == 1 and "parse-error: cannot lint" in result.out


# ---------------------------------------------------------------- files read on the side


def test_lint_does_not_read_a_huge_config_whole(tmp_path: Path) -> None:
    """lint looks into plainsail.yml for `migrate.layout`: a file past the config's limit is
    refused as config check refuses it, without being read whole."""
    pytest.importorskip("pglast")
    write(tmp_path, "migrations/0001_a.sql", "CREATE TABLE a (id bigint);\n")
    sparse(tmp_path / "plainsail.yml", 50 * 1024**2)
    result = plainsail("lint", "migrations", "migrations", cwd=tmp_path, timeout=60,
                       env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.code == 1 and "larger than 1024 KiB" in result.err


def test_huge_dockerignore_is_a_build_error(tmp_path: Path) -> None:
    from plainsail.errors import BuildError
    from plainsail.supply.dockerignore import rules_for

    write(tmp_path, "Dockerfile", "FROM scratch\n")
    sparse(tmp_path / ".dockerignore", 50 * 1024**2)
    with pytest.raises(BuildError, match=r"\.dockerignore is larger than 1 MiB"):
        rules_for(tmp_path, tmp_path / "Dockerfile")
    write(tmp_path, ".dockerignore", "*.key\n")
    assert rules_for(tmp_path, tmp_path / "Dockerfile")

"""Migration layouts: detection, versions, order, refusals, and the lint reading the same
files as the runner. Pure file logic; test_migrate_layouts_pg.py applies them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from plainsail.errors import MigrationError
from plainsail.migrations import layouts
from plainsail.migrations.layouts import detect, discover, flat_version
from plainsail.migrations.ledger import AppliedRow, compare

DATA = Path(__file__).resolve().parent / "data" / "layouts"

EXPECTED = {
    "flat": [("0001", "0001_create_items.sql"), ("0002", "0002_add_price.sql"),
             ("0010", "0010_seed.sql")],
    "diesel": [("00000000000000", "00000000000000_diesel_initial_setup"),
               ("2019-02-26-002946", "2019-02-26-002946_create_users"),
               ("2019-02-27-101500", "2019-02-27-101500_create_posts")],
    "prisma": [("20240105120000", "20240105120000_init"),
               ("20240212093000", "20240212093000_add_profile")],
    "golang-migrate": [("000001", "000001_create_users_table.up.sql"),
                       ("000002", "000002_add_created_at.up.sql"),
                       ("000003", "000003_index_created_at.up.sql")],
    "dbmate": [("20230101120000", "20230101120000_create_accounts.sql"),
               ("20230115090000", "20230115090000_add_plan.sql"),
               ("20230120080000", "20230120080000_index_plan.sql")],
    "flyway": [("1", "V1__create_customer.sql"), ("1.1", "V1_1__add_country.sql"),
               ("2", "V2__seed_customers.sql")],
}


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_fixture_is_detected_and_read_in_order(layout: str) -> None:
    folder = DATA / layout
    assert detect(folder) == layout
    files = discover(folder)
    assert [(f.version, f.name) for f in files] == EXPECTED[layout]
    for f in files:
        assert "down" not in f.path.name and not f.path.name.startswith("U")
        assert f.statements  # every file holds SQL that runs


def test_dbmate_runs_only_the_up_section_and_keeps_line_numbers() -> None:
    files = discover(DATA / "dbmate")
    first = files[0]
    assert "drop table" not in first.text
    assert first.statements[0].line == 2  # the line in the file, below '-- migrate:up'
    assert not first.no_transaction
    assert files[2].no_transaction  # '-- migrate:up transaction:false'
    # Editing the down section is not drift: the checksum covers the up section only.
    assert first.checksum != layouts.checksum_of(first.path.read_bytes())


def test_dbmate_plainsail_marker_counts_on_the_up_sections_first_line(tmp_path: Path) -> None:
    (tmp_path / "1_a.sql").write_text("-- migrate:up\n-- plainsail: no-transaction\n"
                                      "create index concurrently i on t (x);\n"
                                      "-- migrate:down\ndrop index i;\n")
    (f,) = discover(tmp_path)
    assert f.no_transaction and f.first_line == 2


def test_today_flat_versions_are_unchanged() -> None:
    for stem, version in [("0007_add_email", "0007"), ("0001", "0001"),
                          ("20240101-create", "20240101"), ("42-x_y", "42"),
                          ("init_schema", "init"), ("2019-02-26-002946_create_user",
                                                    "2019-02-26-002946")]:
        assert flat_version(stem) == version


def test_flat_numeric_order_never_misorders(tmp_path: Path) -> None:
    for name in ("0002-y.sql", "00010-x.sql", "0003_z.sql"):
        (tmp_path / name).write_text("SELECT 1;\n")
    assert [f.name for f in discover(tmp_path)] == ["0002-y.sql", "0003_z.sql",
                                                      "00010-x.sql"]


def test_timestamped_flat_names_do_not_collide(tmp_path: Path) -> None:
    for name in ("2019-02-26-002946_create_user.sql", "2019-02-27-100000_create_post.sql"):
        (tmp_path / name).write_text("SELECT 1;\n")
    assert [f.version for f in discover(tmp_path)] == ["2019-02-26-002946",
                                                        "2019-02-27-100000"]


def test_every_collision_is_listed(tmp_path: Path) -> None:
    for name in ("0001_a.sql", "0001_b.sql", "0002_c.sql", "2_d.sql", "0003_e.sql"):
        (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(MigrationError) as err:
        discover(tmp_path)
    msg = str(err.value)
    assert "2 group(s)" in msg
    assert "0001_a.sql and 0001_b.sql" in msg and "0002_c.sql and 2_d.sql" in msg


def test_rows_recorded_under_the_old_version_rule_still_match(tmp_path: Path) -> None:
    (tmp_path / "2019-02-26_init.sql").write_text("SELECT 1;\n")
    (f,) = discover(tmp_path)
    row = AppliedRow("2019", f.name, f.checksum, "2024-01-01T00:00:00", 1.0, "me")
    p = compare([f], [row])
    assert p.problems == [] and p.pending == []


def test_flyway_repeatable_is_refused(tmp_path: Path) -> None:
    shutil.copytree(DATA / "flyway", tmp_path / "f")
    (tmp_path / "f" / "R__views.sql").write_text("CREATE OR REPLACE VIEW v AS SELECT 1;\n")
    with pytest.raises(MigrationError, match="R__views.sql is a repeatable Flyway migration"):
        discover(tmp_path / "f")


def test_mixed_layouts_are_refused(tmp_path: Path) -> None:
    (tmp_path / "V1__a.sql").write_text("SELECT 1;\n")
    (tmp_path / "000001_b.up.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="mixes migration layouts: golang-migrate .*flyway"):
        discover(tmp_path)


def test_layout_is_forced_by_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(layouts.ENV, raising=False)
    assert layouts.choose(None) is None
    monkeypatch.setenv(layouts.ENV, "dbmate")
    assert layouts.choose(None) == "dbmate"
    assert layouts.choose("flyway") == "flyway"
    assert layouts.choose(None, "prisma") == "dbmate"
    monkeypatch.delenv(layouts.ENV)
    assert layouts.choose(None, "prisma") == "prisma"
    assert layouts.choose("auto", "prisma") is None
    monkeypatch.setenv(layouts.ENV, "rails")
    with pytest.raises(MigrationError, match=r"\$PLAINSAIL_MIGRATIONS_LAYOUT: unknown layout"):
        layouts.choose(None)


def test_forced_layout_reads_a_folder_detection_would_not(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n")
    (tmp_path / "002_b.sql").write_text("SELECT 3;\n")
    with pytest.raises(MigrationError, match="002_b.sql has no '-- migrate:up' line"):
        discover(tmp_path, "dbmate")
    assert [f.name for f in discover(tmp_path, "flat")] == ["001_a.sql", "002_b.sql"]


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_lint_reads_the_same_files(layout: str, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    pytest.importorskip("pglast")
    from plainsail.lint.sources import collect

    monkeypatch.setenv("PLAINSAIL_LINT_CACHE", str(tmp_path))
    sources = collect([str(DATA / layout)])
    assert [Path(s.name) for s in sources] == [f.path for f in discover(DATA / layout)]
    assert not any("migrate:down" in s.text or "drop table" in s.text.lower()
                   for s in sources)


def test_lint_cli_with_layout_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pglast")
    from plainsail.cli import main

    monkeypatch.setenv("PLAINSAIL_LINT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_a.sql").write_text("-- migrate:up\nALTER TABLE t DROP COLUMN c;\n"
                                      "-- migrate:down\nALTER TABLE t ADD COLUMN c int;\n")
    assert main(["lint", "migrations", str(folder), "--layout", "dbmate"]) == 1
    out = capsys.readouterr().out
    assert "001_a.sql:2: error drop-column" in out and "1 file(s) checked" in out


def _put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_other_runners_markers(tmp_path: Path) -> None:
    """Each runner's own no-transaction marker counts; without one, a file of two
    statements runs in a transaction."""
    from plainsail.migrations.layouts import discover

    one = "CREATE INDEX CONCURRENTLY a ON t (x);\nSELECT 1;\n"
    cases = {
        "flat": [("0001_goose.sql", "-- +goose NO TRANSACTION\n" + one),
                 ("0002_pgm.sql", "-- postgres-migrations disable-transaction\n" + one),
                 ("0003_plain.sql", one)],
        "flyway": [("V1__a.sql", one), ("V1__a.sql.conf", "executeInTransaction=false\n"),
                   ("V2__b.sql", one)],
        "diesel": [("2024-01-01-000000_a/up.sql", one),
                   ("2024-01-01-000000_a/metadata.toml", "run_in_transaction = false\n"),
                   ("2024-01-02-000000_b/up.sql", one)],
        "dbmate": [("20240101_a.sql", "-- migrate:up transaction:false\n" + one),
                   ("20240102_b.sql", "-- migrate:up\n" + one)],
    }
    for layout, entries in cases.items():
        folder = tmp_path / layout
        for name, text in entries:
            _put(folder / name, text)
        got = [f.no_transaction for f in discover(folder, layout)]
        assert got == [True] * (len(got) - 1) + [False], (layout, got)


def test_goose_runs_only_its_up_section(tmp_path: Path) -> None:
    from plainsail.migrations.layouts import discover, read_one

    text = ("-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE a (x int);\n"
            "-- +goose StatementEnd\n\n-- +goose Down\nDROP TABLE a;\n")
    _put(tmp_path / "m" / "00001_a.sql", text)
    (f,) = discover(tmp_path / "m")
    assert [s.text for s in f.statements] == ["CREATE TABLE a (x int)"]
    assert f.statements[0].line == 3
    assert read_one(tmp_path / "m" / "00001_a.sql").statements == f.statements
    # Its checksum covers the up section only, as dbmate's does.
    _put(tmp_path / "m" / "00001_a.sql", text.replace("DROP TABLE a;", "DROP TABLE a CASCADE;"))
    assert discover(tmp_path / "m")[0].checksum == f.checksum

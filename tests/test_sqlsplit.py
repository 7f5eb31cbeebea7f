import pytest

from plainsail.errors import MigrationError
from plainsail.migrations.files import MigrationFile, check_file, non_transactional, read_file
from plainsail.migrations.sqlsplit import split_sql


def test_statements_and_lines() -> None:
    sql = (
        "-- header; not a statement\n"
        "CREATE TABLE a (x text DEFAULT 'a;b');\n"
        "\n"
        "/* block; /* nested; */ */ INSERT INTO a VALUES (E'it\\'s;');\n"
        "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n"
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n"
        'SELECT "semi;colon" FROM a;;\n'
    )
    stmts = split_sql(sql)
    assert [s.line for s in stmts] == [2, 4, 5, 6, 7]
    assert [s.number for s in stmts] == [1, 2, 3, 4, 5]
    assert stmts[1].text.startswith("INSERT")
    assert stmts[3].text.endswith("END")


def test_no_trailing_semicolon_and_empty() -> None:
    assert [s.text for s in split_sql("SELECT 1")] == ["SELECT 1"]
    assert split_sql("  -- only a comment\n") == []


def test_non_transactional_detection(tmp_path) -> None:
    kinds = {
        "CREATE UNIQUE INDEX CONCURRENTLY i ON t (x)": "CREATE INDEX CONCURRENTLY",
        "drop index concurrently i": "DROP INDEX CONCURRENTLY",
        "REINDEX INDEX CONCURRENTLY i": "REINDEX CONCURRENTLY",
        "VACUUM t": "VACUUM",
        "CREATE INDEX i ON t (x)": None,
        "SELECT 'CREATE INDEX CONCURRENTLY'": None,
    }
    for sql, want in kinds.items():
        assert non_transactional(split_sql(sql)[0]) == want, sql


def _file(tmp_path, text: str) -> MigrationFile:
    p = tmp_path / "0001_x.sql"
    p.write_text(text)
    return read_file(p)


def test_transaction_control_is_refused(tmp_path) -> None:
    with pytest.raises(MigrationError, match="statement 2 .*COMMIT"):
        check_file(_file(tmp_path, "CREATE TABLE a (x int);\nCOMMIT;\n"))


def test_crlf_does_not_change_checksum(tmp_path) -> None:
    a = _file(tmp_path, "SELECT 1;\n")
    (tmp_path / "0001_x.sql").write_bytes(b"SELECT 1;\r\n")
    assert read_file(tmp_path / "0001_x.sql").checksum == a.checksum

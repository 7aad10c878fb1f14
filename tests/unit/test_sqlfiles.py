"""SQL splitting with PostgreSQL's parser, header directives, named queries, the shipped files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bxbatch.db.sqlfiles import (
    checksum,
    load_file,
    parse_directives,
    parse_named_queries,
    split_statements,
)
from bxbatch.errors import SqlFileError
from bxbatch.migrations.loader import load_migration

MIGRATION = load_migration()  # the shipped Baserow expansion

FUNCTION_WITH_SEMICOLONS = """
-- a comment; with a semicolon
CREATE TABLE a (id int);  /* block; comment */
CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO a VALUES (1); -- ; inside the body
    RETURN NEW;
END;
$$;
SELECT 'a;b', $tag$ ; $tag$;
"""


def test_split_keeps_dollar_quoted_bodies_whole() -> None:
    stmts = split_statements(FUNCTION_WITH_SEMICOLONS)
    assert [s.kind for s in stmts] == ["CreateStmt", "CreateFunctionStmt", "SelectStmt"]
    assert "RETURN NEW;" in stmts[1].sql and stmts[1].sql.endswith("$$")
    assert stmts[2].sql == "SELECT 'a;b', $tag$ ; $tag$"


def test_statement_lines_are_one_based_file_lines() -> None:
    stmts = split_statements(FUNCTION_WITH_SEMICOLONS)
    assert [s.line for s in stmts] == [3, 4, 10]


def test_unicode_before_a_statement_does_not_shift_it() -> None:
    text = "-- héllo 日本 🎉\nCREATE TABLE b (note text DEFAULT 'ü');\nSELECT 1;"
    stmts = split_statements(text)
    assert stmts[0].sql == "CREATE TABLE b (note text DEFAULT 'ü')"
    assert stmts[1].sql == "SELECT 1"


def test_concurrent_statements_are_detected_from_the_parse_tree() -> None:
    stmts = split_statements(
        "CREATE INDEX CONCURRENTLY i ON t (a); CREATE INDEX j ON t (a); DROP INDEX CONCURRENTLY i; VACUUM t;"
    )
    assert [s.concurrent for s in stmts] == [True, False, True, True]


def test_a_file_read_again_is_not_parsed_again_but_an_edited_one_is(tmp_path: Path) -> None:
    path = tmp_path / "100_x.sql"
    path.write_text("-- bxbatch: phase=indexes\nCREATE INDEX CONCURRENTLY i ON t (a);\n")
    first, again = load_file(path), load_file(path)
    assert again.statements is first.statements  # one parse for both reads
    path.write_text("-- bxbatch: phase=indexes\nCREATE INDEX CONCURRENTLY j ON t (b);\nVACUUM t;\n")
    edited = load_file(path)
    assert [s.sql for s in edited.statements] == ["CREATE INDEX CONCURRENTLY j ON t (b)", "VACUUM t"]
    assert edited.sha256 != first.sha256


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(SqlFileError, match=r"x\.sql, line 3: syntax error at or near \"TABL\""):
        split_statements("SELECT 1;\n\nCREATE TABL oops (id int);\n", "x.sql")


def test_directives_only_in_the_leading_comment_block() -> None:
    text = "-- bxbatch: phase=indexes transactional=false\n-- prose\nSELECT 1;\n-- bxbatch: phase=schema\n"
    assert parse_directives(text) == {"phase": "indexes", "transactional": "false"}
    with pytest.raises(SqlFileError, match="bad bxbatch directive"):
        parse_directives("-- bxbatch: phase\n")


def test_transactional_follows_directive_and_statements(tmp_path: Path) -> None:
    plain = tmp_path / "001_a.sql"
    plain.write_text("CREATE TABLE a (id int);\n")
    concurrent = tmp_path / "002_b.sql"
    concurrent.write_text("-- bxbatch: phase=indexes\nCREATE INDEX CONCURRENTLY i ON a (id);\n")
    forced = tmp_path / "003_c.sql"
    forced.write_text("-- bxbatch: phase=constraints transactional=false\nALTER TABLE a VALIDATE CONSTRAINT c;\n")
    assert load_file(plain).transactional
    assert not load_file(concurrent).transactional
    assert not load_file(forced).transactional
    assert load_file(forced).phase == "constraints"


def test_unknown_phase_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "001_a.sql"
    bad.write_text("-- bxbatch: phase=later\nSELECT 1;\n")
    with pytest.raises(SqlFileError, match="unknown phase 'later'"):
        load_file(bad)


def test_checksum_changes_with_any_byte() -> None:
    assert checksum("SELECT 1;") != checksum("SELECT 1; ")
    assert len(checksum("")) == 64


def test_named_queries() -> None:
    text = "-- name: one\nSELECT 1;\n\n-- name: two_b\nSELECT $1\nFROM t;\n"
    assert parse_named_queries(text) == {"one": "SELECT 1", "two_b": "SELECT $1\nFROM t"}
    with pytest.raises(SqlFileError, match="defined twice"):
        parse_named_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")


def test_shipped_ddl_files_parse_and_are_ordered() -> None:
    files = MIGRATION.ddl_files()
    names = [f.name for f in files]
    assert names == sorted(names)
    assert {f.phase for f in files} == {"schema", "backfill", "indexes", "constraints"}
    # every CREATE INDEX is CONCURRENTLY, and such files never run in one transaction
    for f in files:
        for s in f.statements:
            if s.kind == "IndexStmt":
                assert s.concurrent, f"{f.name}: {s.sql}"
                assert not f.transactional

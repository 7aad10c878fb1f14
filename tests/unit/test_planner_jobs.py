"""Backfill job files: directives, required statements, parsing, and the grouped chunk statement's quoting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pglast import parse_sql

from bxbatch.errors import SqlFileError
from bxbatch.migrations.jobs import load_job, render_segments
from bxbatch.migrations.loader import load_migration

MIGRATION = load_migration()  # the shipped Baserow expansion


def test_shipped_jobs() -> None:
    jobs = {j.name: j for j in MIGRATION.jobs}
    assert list(jobs) == ["enhanced_views", "permissions", "activity_seed"]
    assert jobs["permissions"].key_table == "database_workspaceuser"
    assert jobs["permissions"].key_column == "user_id"  # the unique key's leading column
    assert jobs["enhanced_views"].extra_param == "grid_view_type"
    assert jobs["activity_seed"].per_user_table and not jobs["activity_seed"].reconcile
    for job in jobs.values():
        for name, sql in job.statements.items():
            if "{" not in sql:
                assert len(parse_sql(sql)) == 1, (job.name, name)
    # the guide's undefined alias is gone
    for name in ("chunk", "set_based", "reconcile"):
        assert "wu.permissions ->> 'create_table'" in jobs["permissions"].sql(name)
        assert " g.permissions" not in jobs["permissions"].sql(name).replace("not g.permissions", "")


def test_grouped_chunk_quotes_every_table_and_indexes_the_arrays() -> None:
    job = {j.name: j for j in MIGRATION.jobs}["activity_seed"]
    sql = render_segments(job, ["database_table_1", 'evil"; DROP TABLE x; --'], schema="public")
    assert '"public"."database_table_1" AS r' in sql
    assert '"public"."evil""; DROP TABLE x; --" AS r' in sql
    assert "($1::integer[])[2]" in sql and "($3::bigint[])[2]" in sql
    assert sql.count("UNION ALL") == 1
    assert len(parse_sql(sql)) == 1  # one statement, whatever the names
    with pytest.raises(ValueError, match="segment"):
        render_segments(job, [], "public")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bad_job_files(tmp_path: Path) -> None:
    with pytest.raises(SqlFileError, match="file name"):
        load_job(_write(tmp_path, "job.sql", "-- bxbatch: job=x\n"))
    with pytest.raises(SqlFileError, match="unknown source"):
        load_job(_write(tmp_path, "001_x.sql", "-- bxbatch: source=nowhere\n"))
    with pytest.raises(SqlFileError, match="missing statements"):
        load_job(_write(tmp_path, "002_x.sql", "-- bxbatch: key_table=t key_column=id\n-- name: chunk\nSELECT 1\n"))
    body = "\n".join(f"-- name: {n}\nSELECT 1" for n in ("main_bound", "expected", "set_based"))
    with pytest.raises(SqlFileError, match="exactly one"):
        load_job(
            _write(
                tmp_path,
                "003_x.sql",
                f"-- bxbatch: key_table=t key_column=id\n-- name: chunk\nSELECT 1; SELECT 2\n{body}\n",
            )
        )
    with pytest.raises(SqlFileError, match="line"):
        load_job(
            _write(tmp_path, "004_x.sql", f"-- bxbatch: key_table=t key_column=id\n-- name: chunk\nSELEC 1\n{body}\n")
        )
    with pytest.raises(SqlFileError, match="key_table"):
        load_job(_write(tmp_path, "005_x.sql", f"-- bxbatch: job=y\n-- name: chunk\nSELECT 1\n{body}\n"))
    ok = load_job(
        _write(
            tmp_path, "006_ok.sql", f"-- bxbatch: key_table=t key_column=id\n-- name: chunk\nSELECT $1, $2\n{body}\n"
        )
    )
    assert ok.name == "ok" and ok.order == 6 and not ok.reconcile

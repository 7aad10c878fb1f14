"""Pure helpers of the index, constraint and trigger phases and the monitor (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bxbatch.db.sqlfiles import load_file
from bxbatch.errors import SqlFileError
from bxbatch.migrations.loader import load_migration
from bxbatch.observe.monitor import Blocker, ProgressSample, eta_seconds, render_builds, restarted_count
from bxbatch.phases.constraints import ForeignKey, constraint_tasks
from bxbatch.phases.indexes import index_tasks
from bxbatch.phases.triggers import create_sql

MIGRATION = load_migration()  # the shipped Baserow expansion


def test_index_tasks_come_from_the_ddl_files() -> None:
    tasks = index_tasks(MIGRATION.ddl_files("indexes"), MIGRATION.schema)
    assert len(tasks) == 23  # and the log's two partial indexes, built by the schema phase
    by_name = {t.name: t for t in tasks}
    assert by_name["idx_comment_content_search"].table == "database_comment"
    assert by_name["idx_activitylog_details_search"].table == "database_activitylog"
    assert {t.schema for t in tasks} == {"public"}


def test_index_phase_refuses_plain_and_unnamed_builds(tmp_path: Path) -> None:
    plain = tmp_path / "120_plain.sql"
    plain.write_text("-- bxbatch: phase=indexes\nCREATE INDEX idx_x ON t (a);\n")
    with pytest.raises(SqlFileError, match="not built CONCURRENTLY"):
        index_tasks([load_file(plain)], "public")
    unnamed = tmp_path / "121_unnamed.sql"
    unnamed.write_text("-- bxbatch: phase=indexes\nCREATE INDEX CONCURRENTLY ON t (a);\n")
    with pytest.raises(SqlFileError, match="only named CREATE INDEX"):
        index_tasks([load_file(unnamed)], "public")


def test_constraint_tasks_name_table_and_constraint() -> None:
    tasks = constraint_tasks(MIGRATION.ddl_files("constraints"), MIGRATION.schema)
    assert len(tasks) == 43
    assert (tasks[0].table, tasks[0].constraint) == ("database_kanbanview", "fk_kanbanview_view_ptr")
    assert all(t.constraint for t in tasks)


def _fk(**kw: object) -> ForeignKey:
    base: dict[str, object] = {
        "name": "fk_x",
        "table_schema": "public",
        "table": 'we"ird',
        "ref_schema": "public",
        "ref_table": "database_field",
        "columns": ("a", "b"),
        "not_null": (False, False),
        "ref_columns": ("id", "k"),
        "on_delete": "n",
        "pk_column": "id",
        "validated": False,
    }
    base.update(kw)
    return ForeignKey(**base)  # type: ignore[arg-type]


def test_orphan_sql_is_an_anti_join_with_quoted_identifiers() -> None:
    fk = _fk()
    sql = fk.count_sql()
    assert 'FROM "public"."we""ird" r' in sql
    assert '"r"."a" IS NOT NULL AND "r"."b" IS NOT NULL' in sql  # MATCH SIMPLE: a NULL is no orphan
    assert 'NOT EXISTS (SELECT 1 FROM "public"."database_field" p WHERE p."id" = "r"."a" AND p."k" = "r"."b")' in sql
    assert "NOT IN" not in sql.upper()
    assert "jsonb_build_object('a', r.\"a\", 'b', r.\"b\")" in fk.sample_sql()


def test_clean_action_follows_the_key() -> None:
    assert _fk(on_delete="n").clean_action == "set_null"
    assert _fk(on_delete="a").clean_action == "set_null"
    assert _fk(on_delete="c", not_null=(True, True)).clean_action == "delete"
    assert _fk(on_delete="a", not_null=(True, False)).clean_action is None  # cannot NULL, must not delete
    assert "UPDATE" in _fk().clean_sql("set_null") and "DELETE" in _fk().clean_sql("delete")


def test_progress_percent_and_eta() -> None:
    first = ProgressSample(pid=1, phase="building index: scanning table", at=100.0, blocks_total=1000, blocks_done=100)
    now = ProgressSample(pid=1, phase="building index: scanning table", at=102.0, blocks_total=1000, blocks_done=300)
    assert now.percent == 30.0 and now.unit == "blocks"
    assert eta_seconds(first, now) == 7.0  # 100 blocks/s, 700 left
    other_phase = ProgressSample(pid=1, phase="building index: loading tuples in tree", at=103.0, tuples_total=10)
    assert eta_seconds(first, other_phase) is None
    assert other_phase.percent == 0.0 and other_phase.unit == "tuples"
    waiting = ProgressSample(pid=1, phase="waiting for old snapshots", at=1.0, lockers_total=2, lockers_done=1)
    assert waiting.waiting and waiting.percent == 50.0


def test_a_scan_starting_mid_table_restarts_the_eta() -> None:
    """PG reports blocks_done = blocks_total at the first block of a synchronized scan that starts
    mid-table, then counts up: measured from that first reading, the ETA would stay unknown."""
    phase = "building index: scanning table"
    at_total = ProgressSample(pid=1, phase=phase, at=100.0, blocks_total=8384, blocks_done=8384)
    counting = ProgressSample(pid=1, phase=phase, at=100.05, blocks_total=8384, blocks_done=1899)
    later = ProgressSample(pid=1, phase=phase, at=101.05, blocks_total=8384, blocks_done=3899)
    assert eta_seconds(at_total, later) is None  # what the monitor showed before
    assert restarted_count(at_total, counting)
    assert eta_seconds(counting, later) == 2.2  # 2000 blocks/s, 4485 left
    assert not restarted_count(counting, later)  # counting up
    assert not restarted_count(at_total, ProgressSample(pid=1, phase="other", at=101.0, blocks_total=9, blocks_done=1))
    assert not restarted_count(None, counting)


def test_render_builds_names_the_blocker() -> None:
    blocker = Blocker(
        pid=42,
        reasons=("lock:virtualxid",),
        application_name="baserow",
        usename="app",
        client_addr=None,
        state="idle in transaction",
        backend_type="client backend",
        xact_age_s=61.2,
        xact_start=None,
        query_start=None,
        wait_event="ClientRead",
    )
    lines = render_builds(
        [
            {
                "live": True,
                "index_name": "idx_a",
                "table_name": "t",
                "phase": "waiting for writers before build",
                "percent": None,
                "eta_s": None,
                "blocks_done": 0,
                "blocks_total": 0,
                "tuples_done": 0,
                "tuples_total": 0,
                "running_s": 5.0,
                "backend_pid": 7,
                "blockers": [blocker.as_json()],
            }
        ]
    )
    assert "waiting for pid 42 (baserow, idle in transaction, transaction open 61s" in lines[1]
    assert blocker.describe() == "pid 42 (baserow, idle in transaction, transaction open 61s)"


def test_trigger_ddl_is_statement_level_per_event() -> None:
    spec = MIGRATION.trigger
    assert spec is not None
    sql = create_sql(spec, '"public"."database_table_5"', 5, list(spec.events))
    assert sql.count("FOR EACH STATEMENT") == 3
    assert 'AFTER UPDATE ON "public"."database_table_5" REFERENCING OLD TABLE AS bxbatch_old NEW TABLE' in sql
    assert '"public"."log_table_activity_stmt"(\'5\')' in sql

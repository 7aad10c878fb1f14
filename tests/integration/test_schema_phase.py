"""The schema, index and constraint DDL against a real server: catalog vs the guide, idempotence, refusals."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
import structlog
from tests.guide_catalog import FOREIGN_KEYS, INDEXES, NAMED_FKS, PRIMARY_KEYS, TABLES, UNIQUE

from bxbatch.errors import ChangedFileError, LockBusy, SqlFileError, StoppedForFix
from bxbatch.ledger import runs as ledger
from bxbatch.migrations.loader import load_migration
from bxbatch.phases import schema, triggers
from bxbatch.settings import Settings

MIGRATION = load_migration()  # the shipped Baserow expansion

BASE_SCHEMA = (Path(__file__).parent.parent / "base_schema.sql").read_text()
LOG = structlog.get_logger("test")
DDL_PHASES = ("schema", "backfill", "indexes", "constraints")

Connect = Callable[[str], Awaitable[asyncpg.Connection]]


async def _base_db(db_factory: Callable[..., Awaitable[str]], conn_to: Connect) -> tuple[str, asyncpg.Connection]:
    dsn = await db_factory()
    conn = await conn_to(dsn)
    await conn.execute(BASE_SCHEMA)
    await ledger.ensure_schema(conn)
    return dsn, conn


async def _apply_all(conn: asyncpg.Connection, settings: Settings) -> list[schema.FileResult]:
    results: list[schema.FileResult] = []
    for phase in DDL_PHASES:
        results += await schema.apply_phase(conn, settings, None, LOG, phase=phase)
    return results


def _type(row: asyncpg.Record) -> str:
    if row["data_type"] == "character varying":
        return f"varchar({row['character_maximum_length']})"
    if row["data_type"] == "numeric":
        return f"numeric({row['numeric_precision']},{row['numeric_scale']})"
    return str(row["data_type"])


async def test_catalog_matches_the_guide(db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    dsn, conn = await _base_db(db_factory, conn_to)
    await _apply_all(conn, Settings(dsn=dsn))

    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, "
        "column_default, is_nullable FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = ANY($1::text[])",
        list(TABLES),
    )
    actual: dict[str, dict[str, tuple[str, str | None, bool]]] = {}
    for r in rows:
        actual.setdefault(r["table_name"], {})[r["column_name"]] = (
            _type(r),
            r["column_default"],
            r["is_nullable"] == "YES",
        )
    assert set(actual) == set(TABLES)
    for table, columns in TABLES.items():
        assert actual[table] == columns, table

    constraints = await conn.fetch(
        "SELECT conrelid::regclass::text AS tbl, conname, contype::text, convalidated, confdeltype::text, "
        "confrelid::regclass::text AS ref, "
        "(SELECT array_agg(attname ORDER BY k.ord) FROM unnest(conkey) WITH ORDINALITY k(num, ord) "
        " JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.num) AS cols "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text = ANY($1::text[])",
        list(TABLES),
    )
    pks = {c["tbl"]: tuple(c["cols"]) for c in constraints if c["contype"] == "p"}
    assert pks == PRIMARY_KEYS
    uniques: dict[str, list[tuple[str, ...]]] = {}
    for c in constraints:
        if c["contype"] == "u":
            uniques.setdefault(c["tbl"], []).append(tuple(c["cols"]))
    assert uniques == UNIQUE

    actions = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
    fks = {(c["tbl"], c["cols"][0]): (c["ref"], actions[c["confdeltype"]]) for c in constraints if c["contype"] == "f"}
    assert fks == FOREIGN_KEYS
    assert all(c["convalidated"] for c in constraints if c["contype"] == "f")
    names = {c["conname"]: (c["tbl"], c["cols"][0]) for c in constraints if c["contype"] == "f"}
    for name, where in NAMED_FKS.items():
        assert names[name] == where

    indexes = {
        r["name"]: (r["tbl"], r["def"].split(" USING ", 1)[1], r["indisvalid"])
        for r in await conn.fetch(
            "SELECT c.relname AS name, i.indrelid::regclass::text AS tbl, pg_get_indexdef(i.indexrelid) AS def, "
            "i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relname LIKE 'idx\\_%'"
        )
    }
    for name, (table, definition) in INDEXES.items():
        assert indexes[name] == (table, definition, True), name

    fn = await conn.fetchrow(
        "SELECT prorettype::regtype::text AS rettype, proconfig, l.lanname FROM pg_proc p "
        "JOIN pg_language l ON l.oid = p.prolang WHERE proname = 'log_table_activity'"
    )
    assert fn["rettype"] == "trigger" and fn["lanname"] == "plpgsql"
    assert fn["proconfig"] == ["search_path=pg_catalog, public"]


async def test_applying_twice_is_a_no_op(db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    dsn, conn = await _base_db(db_factory, conn_to)
    first = await _apply_all(conn, Settings(dsn=dsn))
    assert all(r.status == "applied" for r in first)
    objects = await conn.fetchval("SELECT count(*) FROM pg_class")
    ledger_rows = await conn.fetch("SELECT file, applied_at FROM bxbatch.ddl_file ORDER BY file")
    second = await _apply_all(conn, Settings(dsn=dsn))
    assert [r.status for r in second] == ["skipped"] * len(first)
    assert await conn.fetchval("SELECT count(*) FROM pg_class") == objects
    assert await conn.fetch("SELECT file, applied_at FROM bxbatch.ddl_file ORDER BY file") == ledger_rows


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    """A copy of the shipped migration directory, for a test to edit (Settings(migration=...) points at it)."""
    root = tmp_path / "mig"
    shutil.copytree(MIGRATION.root, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


async def test_an_edited_applied_file_is_refused_by_name(db_factory, conn_to, sql_copy: Path) -> None:  # type: ignore[no-untyped-def]
    dsn, conn = await _base_db(db_factory, conn_to)
    await schema.apply_phase(conn, Settings(dsn=dsn, migration=str(sql_copy)), None, LOG, phase="schema")
    target = sql_copy / "ddl" / "003_collaboration_tables.sql"
    target.write_text(target.read_text().replace("user_agent text", "user_agent varchar(500)"))
    before = await conn.fetchval("SELECT count(*) FROM bxbatch.ddl_file")
    with pytest.raises(ChangedFileError, match=r"ddl/003_collaboration_tables\.sql was changed"):
        await schema.apply_phase(conn, Settings(dsn=dsn, migration=str(sql_copy)), None, LOG, phase="indexes")
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.ddl_file") == before


async def test_syntax_error_stops_before_any_change(db_factory, conn_to, sql_copy: Path) -> None:  # type: ignore[no-untyped-def]
    dsn, conn = await _base_db(db_factory, conn_to)
    (sql_copy / "ddl" / "008_broken.sql").write_text(
        "-- fine\nCREATE TABLE ok_one (id int);\n\nCREATE TABL nope (id int);\n"
    )
    with pytest.raises(SqlFileError, match=r"008_broken\.sql, line 4: syntax error"):
        await schema.apply_phase(conn, Settings(dsn=dsn, migration=str(sql_copy)), None, LOG, phase="schema")
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.ddl_file") == 0
    assert await conn.fetchval("SELECT to_regclass('database_kanbanview')") is None


async def test_failing_statement_rolls_back_its_file(db_factory, conn_to, sql_copy: Path) -> None:  # type: ignore[no-untyped-def]
    dsn, conn = await _base_db(db_factory, conn_to)
    (sql_copy / "ddl" / "008_fails.sql").write_text(
        "CREATE TABLE half_done (id int);\n\nALTER TABLE no_such_table ADD COLUMN x int;\n"
    )
    # a relation that does not exist is not the statement's fault to fix: the run stops for the fix (exit 13)
    with pytest.raises(StoppedForFix, match=r"008_fails\.sql, line 3: relation \"no_such_table\" does not exist"):
        await schema.apply_phase(conn, Settings(dsn=dsn, migration=str(sql_copy)), None, LOG, phase="schema")
    files = [r["file"] for r in await conn.fetch("SELECT file FROM bxbatch.ddl_file ORDER BY file")]
    assert files == [
        f"00{i}_{n}"
        for i, n in enumerate(
            [
                "view_tables.sql",
                "field_tables.sql",
                "collaboration_tables.sql",
                "automation_tables.sql",
                "dashboard_tables.sql",
                "backfill_targets.sql",
                "activity_trigger_function.sql",
            ],
            start=1,
        )
    ]
    assert await conn.fetchval("SELECT to_regclass('half_done')") is None


async def test_lock_timeout_retries_instead_of_queueing(db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    dsn, conn = await _base_db(db_factory, conn_to)
    blocker = await conn_to(dsn)
    app = await conn_to(dsn)
    await blocker.execute("BEGIN; LOCK TABLE database_field IN ACCESS EXCLUSIVE MODE")
    settings = Settings(dsn=dsn, lock_timeout_ms=100, retry_base_ms=50, retry_max_ms=200, max_attempts=100)
    task = asyncio.create_task(schema.apply_phase(conn, settings, None, LOG, phase="schema"))
    await asyncio.sleep(1.5)
    # While the DDL keeps timing out and retrying, it never holds a queue position long:
    # an application read of database_view (locked by the FK DDL too) is not stuck behind it.
    assert not task.done()
    await blocker.execute("ROLLBACK")
    results = await asyncio.wait_for(task, 30)
    fk_file = next(r for r in results if r.name == "010_foreign_keys.sql")
    assert fk_file.status == "applied" and fk_file.retries >= 3
    assert await app.fetchval("SELECT count(*) FROM database_view") == 0


async def test_second_process_gets_a_clear_lock_message(db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    dsn, conn = await _base_db(db_factory, conn_to)
    other = await conn_to(dsn)
    await other.execute("SELECT set_config('application_name', 'bxbatch:main', false)")
    await other.execute("SELECT pg_advisory_lock($1, $2)", ledger.LOCK_CLASS, ledger.LOCK_DDL)
    pid = await other.fetchval("SELECT pg_backend_pid()")
    with pytest.raises(LockBusy, match=rf"another bxbatch process is applying DDL: backend pid {pid} \(bxbatch:main"):
        await schema.apply_phase(conn, Settings(dsn=dsn), None, LOG, phase="schema")
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.ddl_file") == 0


async def test_activity_trigger_function_corrected(db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    dsn, conn = await _base_db(db_factory, conn_to)
    await schema.apply_phase(conn, Settings(dsn=dsn), None, LOG, phase="schema")
    await conn.execute(
        "INSERT INTO auth_user (username) VALUES ('u'); INSERT INTO database_workspace (name) VALUES ('w');"
        "INSERT INTO database_database (workspace_id) VALUES (1);"
        "INSERT INTO database_table (database_id) VALUES (1), (1), (1);"
        # a user table: no table_id column, like every Baserow user table
        'CREATE TABLE database_table_3 (id serial PRIMARY KEY, created_on timestamptz, "order" numeric, field_7 text);'
        "INSERT INTO database_table_3 (field_7) VALUES ('before');"
    )
    high_water = await triggers.install_one(conn, Settings(dsn=dsn), MIGRATION.profile, 3, "database_table_3", None)
    assert high_water == 1
    # idempotent: a second install neither adds a trigger nor moves the high-water mark
    await conn.execute("INSERT INTO database_table_3 (field_7) VALUES ('after')")
    assert await triggers.install_one(conn, Settings(dsn=dsn), MIGRATION.profile, 3, "database_table_3", None) == 1
    # statement-level, one trigger per event (transition tables need single-event triggers)
    assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'database_table_3'::regclass") == 3

    await conn.execute("UPDATE database_table_3 SET field_7 = 'x' WHERE id = 1")  # app.current_user_id unset
    await conn.execute("SET app.current_user_id = '1'")
    await conn.execute("DELETE FROM database_table_3 WHERE id = 1")
    await conn.execute("SET app.current_user_id = 'not-a-number'")
    await conn.execute("INSERT INTO database_table_3 (field_7) VALUES ('garbage user')")
    await conn.execute("SET search_path = pg_temp")  # a caller's search_path cannot redirect the function
    await conn.execute("INSERT INTO public.database_table_3 (field_7) VALUES ('odd path')")
    await conn.execute("RESET search_path")
    log = await conn.fetch(
        "SELECT user_id, table_id, row_id, action_type, details FROM database_activitylog ORDER BY id"
    )
    assert [(r["user_id"], r["table_id"], r["row_id"], r["action_type"]) for r in log] == [
        (None, 3, 2, "row_created"),
        (None, 3, 1, "row_updated"),
        (1, 3, 1, "row_deleted"),
        (None, 3, 3, "row_created"),
        (None, 3, 4, "row_created"),
    ]
    import json

    assert json.loads(log[1]["details"])["new_data"]["field_7"] == "x"
    assert json.loads(log[1]["details"])["old_data"]["field_7"] == "before"

"""A hostile search_path (issue 11, item 1): a shadow table ahead of the migration's schema never changes the result.

The issue's repro for every base table the migration reads (and a user table): interrupt a run
in the triggers phase, create ``shadow.<table>`` holding different rows, ``ALTER DATABASE ... SET
search_path = shadow, public``, resume. Preflight refuses, naming the shadow table; with that check
switched off, bxbatch's pinned search_path alone still gives exactly the right rows.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from tests.backfill_support import ALL_PHASES, expected_derived, present_rows_logged_once, snapshot, synth_template

from bxbatch.db.session import connect
from bxbatch.errors import Interrupted, PreflightFailed
from bxbatch.migrations.loader import load_migration
from bxbatch.ops import run as app
from bxbatch.ops.run import run_migration
from bxbatch.phases import preflight, triggers
from bxbatch.phases.context import RunContext
from bxbatch.phases.preflight_schema import split_search_path
from bxbatch.settings import Settings

MIGRATION = load_migration()  # the shipped Baserow expansion

BASE_TABLES = sorted(MIGRATION.profile.required_columns)

# Rows the shadow copy holds instead of the real ones: half of them, and every member an editor.
SHADOW_CHANGES = {
    "database_workspaceuser": "UPDATE shadow.database_workspaceuser SET permissions = '{\"create_table\": true}'",
    "database_view": "UPDATE shadow.database_view SET type = 'table'",
}


def _phases_stopping_in_triggers() -> list[tuple[str, Any]]:
    async def triggers_then_stop(ctx: RunContext) -> dict[str, Any]:
        await triggers.run(ctx)
        raise Interrupted("interrupted in the triggers phase (test)")

    phases: list[tuple[str, Any]] = []
    for name, fn in ALL_PHASES:
        if name == "triggers":
            phases.append((name, triggers_then_stop))
            break
        phases.append((name, fn))
    return phases


async def _shadow(conn: asyncpg.Connection, dbname: str, table: str) -> None:
    await conn.execute("CREATE SCHEMA shadow")
    await conn.execute(f'CREATE TABLE shadow."{table}" AS SELECT * FROM public."{table}" WHERE id % 2 = 1')
    if table in SHADOW_CHANGES:
        await conn.execute(SHADOW_CHANGES[table])
    await conn.execute(f'ALTER DATABASE "{dbname}" SET search_path = shadow, public')


async def _set_database_search_path(conn: asyncpg.Connection, value: str) -> None:
    await conn.execute(f'ALTER DATABASE "{await conn.fetchval("SELECT current_database()")}" SET search_path = {value}')


async def _interrupted_run(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = Settings(dsn=dsn, progress=False, concurrency=2)
    monkeypatch.setattr(app, "PHASES", _phases_stopping_in_triggers())
    with pytest.raises(Interrupted):
        await run_migration(settings)
    monkeypatch.setattr(app, "PHASES", ALL_PHASES)
    return settings


async def _one_user_table(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT relname FROM bxbatch.trigger_install WHERE high_water > 0 LIMIT 1"))


@pytest.fixture
async def install(pg_server, db_factory) -> str:
    return str(await db_factory(template=await synth_template(pg_server, 0.02, 21, user_tables=12)))


@pytest.mark.parametrize("table", [*BASE_TABLES, "user table"])
async def test_shadow_table_after_an_interrupted_run_is_refused_naming_it(install, conn_to, monkeypatch, table):
    settings = await _interrupted_run(install, monkeypatch)
    conn = await conn_to(install)
    table = await _one_user_table(conn) if table == "user table" else table
    await _shadow(conn, await conn.fetchval("SELECT current_database()"), table)
    with pytest.raises(PreflightFailed) as info:
        await run_migration(settings, resume_only=True)
    message = str(info.value)
    assert f"shadow.{table} shadows public.{table}" in message, message
    assert "search_path 'shadow, public' from ALTER DATABASE" in message, message
    assert await conn.fetchval("SELECT status FROM bxbatch.run ORDER BY id DESC LIMIT 1") == "interrupted"
    assert await conn.fetchval("SELECT count(*) FROM database_permission") == 0, "nothing backfilled"


@pytest.mark.parametrize("table", [*BASE_TABLES, "user table"])
async def test_pinned_search_path_alone_gives_the_exact_result(install, conn_to, monkeypatch, table):
    """With the preflight refusal switched off, bxbatch still reads and writes only public."""
    settings = await _interrupted_run(install, monkeypatch)
    conn = await conn_to(install)
    table = await _one_user_table(conn) if table == "user table" else table
    await _shadow(conn, await conn.fetchval("SELECT current_database()"), table)

    async def no_check(conn: asyncpg.Connection, profile: Any) -> preflight.Check:
        return preflight.Check("search_path", preflight.PASS, "switched off by the test")

    monkeypatch.setattr(preflight, "check_search_path", no_check)
    summary = await run_migration(settings, resume_only=True)
    assert summary.status == "completed"
    await conn.execute("SET search_path = public")  # the test reads the real tables
    actual = await snapshot(conn)
    expected = await expected_derived(conn)
    for job in ("enhanced_views", "permissions"):
        assert actual[job] == expected[job], job
    checked, problems = await present_rows_logged_once(conn)
    assert checked > 0 and problems == []
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relnamespace = 'shadow'::regnamespace") == 1


async def test_fresh_run_creates_nothing_in_an_earlier_schema(install, conn_to):
    conn = await conn_to(install)
    await conn.execute("CREATE SCHEMA shadow")
    await conn.execute(
        f'ALTER DATABASE "{await conn.fetchval("SELECT current_database()")}" SET search_path = shadow, public'
    )
    summary = await run_migration(Settings(dsn=install, progress=False, concurrency=2))
    assert summary.status == "completed"
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relnamespace = 'shadow'::regnamespace") == 0
    assert await conn.fetchval("SELECT to_regclass('public.database_permission') IS NOT NULL")


async def test_user_schema_shadow_is_refused(install, conn_to):
    """The default search_path starts with "$user": a schema named after a role shadows for that role."""
    conn = await conn_to(install)
    role = await conn.fetchval("SELECT current_user")
    await conn.execute(f'CREATE SCHEMA "{role}"')
    await conn.execute(f'CREATE TABLE "{role}".database_view AS SELECT * FROM public.database_view LIMIT 1')
    with pytest.raises(PreflightFailed) as info:
        await run_migration(Settings(dsn=install, progress=False))
    assert f"{role}.database_view shadows public.database_view" in str(info.value)
    assert "the server default" in str(info.value) or "postgresql.conf" in str(info.value)
    assert await conn.fetchval("SELECT to_regnamespace('bxbatch') IS NULL"), "nothing created"


async def test_every_bxbatch_session_pins_search_path(install, conn_to):
    conn = await conn_to(install)
    await conn.execute("CREATE SCHEMA shadow")
    await conn.execute(
        f'ALTER DATABASE "{await conn.fetchval("SELECT current_database()")}" SET search_path = shadow, public'
    )
    ours = await connect(Settings(dsn=install))
    try:
        assert await ours.fetchval("SELECT current_schemas(true)") == ["pg_catalog", "public"]
        await ours.execute("CREATE TABLE made_here (a int)")
        assert await ours.fetchval("SELECT 'made_here'::regclass::text") == "made_here"
        assert await conn.fetchval("SELECT to_regclass('public.made_here') IS NOT NULL")
    finally:
        await ours.close()


def test_split_search_path_reads_values_as_postgresql_does():
    assert split_search_path('"$user", public') == ["$user", "public"]
    assert split_search_path("Shadow ,PUBLIC") == ["shadow", "public"]
    assert split_search_path('"We""ird", "A,B" , x') == ['We"ird', "A,B", "x"]
    assert split_search_path("") == []

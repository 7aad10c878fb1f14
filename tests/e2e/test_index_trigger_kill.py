"""SIGKILL `bxbatch run` in the index and trigger phases, run again: INVALID index rebuilt, every trigger once."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import asyncpg
import pytest

from bxbatch.migrations.loader import load_migration
from tests.e2e.clirun import run_cli, spawn_cli
from tests.phase_support import DECOYS, ORPHAN_SEED, many_tables_db, schema_applied_db

MIGRATION = load_migration()  # the shipped Baserow expansion

pytestmark = pytest.mark.slow

RUN = ("run", "--log-format", "json", "--no-progress")


async def _wait_for(conn: asyncpg.Connection, sql: str, *args: object, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await conn.fetchval(sql, *args)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {sql}")


BUILD_WAITING = """
SELECT p.pid FROM pg_stat_progress_create_index p JOIN pg_class c ON c.oid = p.index_relid
WHERE c.relname = $1 AND p.phase LIKE 'waiting%'
"""


async def test_sigkill_during_index_build_leaves_invalid_index_next_run_rebuilds(pg_server, db_factory) -> None:  # type: ignore[no-untyped-def]
    dsn = await schema_applied_db(pg_server, db_factory)
    conn = await asyncpg.connect(dsn)
    app = await asyncpg.connect(dsn)
    try:
        await app.execute("SET application_name = 'baserow_web'")
        await app.execute("BEGIN; INSERT INTO database_comment (row_id, content) VALUES (1, 'in flight')")
        app_pid = await app.fetchval("SELECT pg_backend_pid()")
        proc = spawn_cli(*RUN, "--dsn", dsn)
        try:
            build_pid = await _wait_for(conn, BUILD_WAITING, "idx_comment_table_row")
            # `bxbatch status` shows the build in progress, and who holds it up.
            shown = await asyncio.to_thread(run_cli, "status", "--dsn", dsn, "--json")
            assert shown.returncode == 0, shown.stderr
            builds = json.loads(shown.stdout)["index_builds"]
            assert [b["index_name"] for b in builds] == ["idx_comment_table_row"]
            assert builds[0]["phase"].startswith("waiting") and builds[0]["backend_pid"] == build_pid
            assert app_pid in [x["pid"] for x in builds[0]["blockers"]]
            text = await asyncio.to_thread(run_cli, "status", "--dsn", dsn)
            assert f"waiting for pid {app_pid} (baserow_web, idle in transaction" in text.stdout
        finally:
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.communicate, timeout=30)
        # The server notices the dead client (client_connection_check_interval) and aborts the
        # build, leaving the index INVALID, as any interrupted CONCURRENTLY build does.
        await _wait_for(
            conn, "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", build_pid, timeout=30
        )
        state = await conn.fetchrow(
            "SELECT i.indisvalid, c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'idx_comment_table_row'"
        )
        assert state is not None and state["indisvalid"] is False
        await app.execute("COMMIT")

        result = await asyncio.to_thread(run_cli, *RUN, "--dsn", dsn, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        after = await conn.fetchrow(
            "SELECT i.indisvalid, c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'idx_comment_table_row'"
        )
        assert after is not None and after["indisvalid"] and after["oid"] != state["oid"]
        assert await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
        history = [
            (r["action"], r["status"])
            for r in await conn.fetch(
                "SELECT action, status FROM bxbatch.index_build WHERE index_name = 'idx_comment_table_row' ORDER BY id"
            )
        ]
        assert history == [("build", "abandoned"), ("rebuild", "done")]
        assert "index_invalid_dropped" in result.stderr
        assert await conn.fetchval("SELECT count(*) FROM bxbatch.run") == 1  # the killed run was continued
    finally:
        await app.close()
        await conn.close()


async def test_sigkill_during_trigger_phase_then_run_again(pg_server, db_factory) -> None:  # type: ignore[no-untyped-def]
    n = 2000
    dsn = await many_tables_db(pg_server, db_factory, n)
    conn = await asyncpg.connect(dsn)
    try:
        proc = spawn_cli(*RUN, "--dsn", dsn, "--trigger-group-size", "5")
        try:
            await _wait_for(
                conn,
                "SELECT to_regclass('bxbatch.trigger_install') IS NOT NULL "
                "AND (SELECT count(*) FROM bxbatch.trigger_install) >= 200",
            )
        finally:
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.communicate, timeout=30)
        partial = await conn.fetchval("SELECT count(*) FROM bxbatch.trigger_install")
        assert 200 <= partial < n, partial
        # every committed group is complete: a recorded table has all three triggers
        incomplete = await conn.fetchval(
            "SELECT count(*) FROM bxbatch.trigger_install ti WHERE (SELECT count(*) FROM pg_trigger t "
            "WHERE t.tgrelid = ('public.' || quote_ident(ti.relname))::regclass AND t.tgname LIKE 'bxbatch%') <> 3"
        )
        assert incomplete == 0

        result = await asyncio.to_thread(run_cli, *RUN, "--dsn", dsn, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        rows = await conn.fetch(
            "SELECT c.relname, count(*) AS n FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND t.tgname = ANY($1::text[]) GROUP BY c.relname",
            list(MIGRATION.trigger.events),
        )
        have = {r["relname"]: r["n"] for r in rows}
        assert have == {f"database_table_{i}": 3 for i in range(1, n + 1)}
        assert not set(DECOYS) & set(have)
        assert await conn.fetchval("SELECT count(*) FROM bxbatch.trigger_install") == n
    finally:
        await conn.close()


async def test_orphans_stop_the_cli_run_until_clean_orphans(pg_server, db_factory) -> None:  # type: ignore[no-untyped-def]
    dsn = await schema_applied_db(pg_server, db_factory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(ORPHAN_SEED)
        stopped = await asyncio.to_thread(run_cli, *RUN, "--dsn", dsn, timeout=300)
        assert stopped.returncode == 9, stopped.stderr[-2000:]
        last = stopped.stderr.strip().splitlines()[-1]
        assert last.startswith("bxbatch: error: 4 foreign keys cannot be validated, nothing was changed")
        assert "--clean-orphans" in last
        assert await conn.fetchval("SELECT count(*) FROM database_kanbanview") == 3  # untouched
        assert await conn.fetchval("SELECT status FROM bxbatch.run") == "interrupted"

        cleaned = await asyncio.to_thread(run_cli, *RUN, "--dsn", dsn, "--clean-orphans", timeout=300)
        assert cleaned.returncode == 0, cleaned.stderr[-2000:]
        assert await conn.fetchval("SELECT count(*) FROM bxbatch.orphan_fix") == 5
        assert await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated") == 0
        assert await conn.fetchval("SELECT count(*) FROM bxbatch.run") == 1
    finally:
        await conn.close()

"""Every command on a server whose lock table is tiny: no transaction may take locks per user table.

The install is built on a normal server, which is then restarted with ``max_locks_per_transaction
= 10``, 20 connections and few background workers: the shared lock table then holds about 350
(PG 15) to 750 (PG 18) locks, fewer than one transaction over the install's 400 user tables takes
(a user table costs a lock for itself and one per index). Each command is the real CLI, as an
operator runs it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from bxbatch.devtools.embedded import start_server
from bxbatch.errors import ExitCode
from tests.backfill_support import (
    assert_ledger_exact,
    expected_derived,
    present_rows_logged_once,
    snapshot,
    synth_builder,
)
from tests.conftest import Cluster
from tests.e2e.clirun import BXBATCH, cli_env, run_cli

USER_TABLES = 400
# the lock table has max_locks_per_transaction x (every backend the server may start) slots: few of each
TINY_LOCK_TABLE = {
    "max_locks_per_transaction": "10",
    "max_connections": "20",
    "max_wal_senders": "0",
    "max_worker_processes": "2",
    "autovacuum_max_workers": "1",
}
ARGS = ("--log-format", "json")
RUN_ARGS = ("--concurrency", "2", "--no-progress", *ARGS)


@pytest.fixture(scope="module")
def tiny_server(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A server with the install built in database ``many`` (a template), then restarted with a tiny lock table."""
    server = start_server(request.config.getoption("--pg"))
    try:
        cluster = Cluster(admin_dsn=server.dsn(), server=server)

        async def build() -> int:
            await cluster.create_database(name="many")
            await synth_builder(0.01, 5, USER_TABLES)(cluster.dsn("many"))
            conn = await cluster.admin()
            try:
                return int(await conn.fetchval("SELECT current_setting('server_version_num')::int"))
            finally:
                await conn.close()

        version = asyncio.run(build())
        server.stop()
        server.settings.update(TINY_LOCK_TABLE)
        if version >= 180000:
            server.settings["autovacuum_worker_slots"] = "1"  # PG 18 sizes the lock table by these slots
        server.start()
        yield cluster
    finally:
        server.close()


@pytest.fixture
async def many_db(tiny_server: Cluster) -> AsyncIterator[str]:
    name = await tiny_server.create_database(template="many")
    try:
        yield tiny_server.dsn(name)
    finally:
        await tiny_server.drop_database(name)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


def spawn(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([BXBATCH, *args], stdout=out, stderr=subprocess.STDOUT, env=cli_env())


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if result.returncode:
        print(result.stderr[-6000:])
    assert result.returncode == 0, (result.args, result.returncode, result.stderr[-3000:], result.stdout[-2000:])
    return result


async def lock_table_is_tiny(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT current_setting('max_locks_per_transaction')") == "10"
        # one transaction over every user table would overflow the lock table: the premise of these tests
        with pytest.raises(asyncpg.OutOfMemoryError):
            async with conn.transaction():
                await conn.execute(
                    "DO $$DECLARE r record; BEGIN FOR r IN SELECT relname FROM pg_class "
                    "WHERE relname ~ '^database_table_[0-9]+$' LOOP "
                    "EXECUTE format('SELECT count(*) FROM %I', r.relname); END LOOP; END$$"
                )
    finally:
        await conn.close()


async def assert_migrated_exactly(dsn: str) -> None:
    """What the normal-size tests expect: derived rows equal what the base tables imply, every row logged once."""
    conn = await asyncpg.connect(dsn)
    try:
        actual, expected = await snapshot(conn), await expected_derived(conn)
        assert actual["enhanced_views"] == expected["enhanced_views"]
        assert actual["permissions"] == expected["permissions"]
        checked, problems = await present_rows_logged_once(conn)
        assert checked > 1000 and not problems, problems[:5]
        assert await conn.fetchval("SELECT count(*) FROM bxbatch.trigger_install") == USER_TABLES
        runs = await conn.fetch("SELECT id, status FROM bxbatch.run ORDER BY id")
        assert [r["status"] for r in runs] == ["completed"]
        await assert_ledger_exact(conn, runs[0]["id"])
    finally:
        await conn.close()


async def kill_when(proc: subprocess.Popen[bytes], dsn: str, sql: str, at_least: int, timeout: float = 240) -> bool:
    """SIGKILL ``proc`` once ``sql`` returns at least ``at_least``; False if it exited first."""
    conn = await asyncpg.connect(dsn)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "bxbatch did not reach the moment in time"
            try:
                value = await conn.fetchval(sql)
            except asyncpg.UndefinedTableError:
                value = None
            if value is not None and value >= at_least:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            await asyncio.sleep(0.02)
        return False
    finally:
        await conn.close()


async def test_every_command_on_a_tiny_lock_table(many_db: str, tmp_path: Path) -> None:
    await lock_table_is_tiny(many_db)
    ok(cli("preflight", "--dsn", many_db, *ARGS))
    ok(cli("plan", "--dsn", many_db, *ARGS))
    ok(cli("plan", "--sample", "--dsn", many_db, *ARGS))
    ok(cli("status", "--dsn", many_db, *ARGS))

    log = tmp_path / "run.log"
    proc = spawn(log, "run", "--dsn", many_db, *RUN_ARGS)
    # killed in the middle of the trigger phase (groups of user tables, each its own transaction)
    killed = await kill_when(proc, many_db, "SELECT count(*) FROM bxbatch.trigger_install", USER_TABLES // 3)
    assert killed, log.read_text()[-3000:]
    for _attempt in range(5):
        resumed = cli("resume", "--dsn", many_db, *RUN_ARGS)
        if resumed.returncode != ExitCode.BUSY:  # the killed process's backend may still be finishing
            break
        await asyncio.sleep(1.0)
    ok(resumed)

    status = ok(cli("status", "--dsn", many_db, *ARGS))
    assert "completed" in status.stdout
    validated = ok(cli("validate", "--dsn", many_db, *ARGS))
    assert "validation: passed" in validated.stdout
    await assert_migrated_exactly(many_db)

    # rollback killed among its trigger groups (tables read from the catalog in keyset batches), then again
    proc = spawn(log, "rollback", "--yes", "--dsn", many_db, *ARGS)
    done = "SELECT count(*) FROM bxbatch.rollback_step WHERE step LIKE 'trigger:%'"
    killed = await kill_when(proc, many_db, done, USER_TABLES // 3)
    assert killed, log.read_text()[-3000:]
    conn = await asyncpg.connect(many_db)
    try:  # what was dropped is recorded, what is recorded was dropped: the catalog says what is left
        left = "SELECT count(DISTINCT tgrelid) FROM pg_trigger WHERE tgname LIKE 'bxbatch_activity%'"
        row = await conn.fetchrow(f"SELECT ({done}) AS done, ({left}) AS left")  # one snapshot
        assert USER_TABLES // 3 <= row["done"] == USER_TABLES - row["left"], dict(row)
    finally:
        await conn.close()
    for _attempt in range(5):
        again = cli("rollback", "--yes", "--dsn", many_db, *ARGS)
        if again.returncode != ExitCode.BUSY:
            break
        await asyncio.sleep(1.0)
    ok(again)
    conn = await asyncpg.connect(many_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == 0
        assert await conn.fetchval("SELECT to_regnamespace('bxbatch')") is None
        assert await conn.fetchval("SELECT to_regclass('database_activitylog')") is None
    finally:
        await conn.close()


async def test_lock_table_full_is_exit_14_and_resumable(many_db: str) -> None:
    """Groups forced far past the lock table: one line naming the setting, its value, the group size and the
    flag (exit 14, no "internal error"); the same run then resumes to the end with the computed groups."""
    failed = cli("run", "--dsn", many_db, *RUN_ARGS, "--table-group-size", str(USER_TABLES))
    assert failed.returncode == ExitCode.LOCKS_EXHAUSTED, (failed.returncode, failed.stderr[-2000:])
    error = [line for line in failed.stderr.splitlines() if line.startswith("bxbatch: error:")]
    assert len(error) == 1 and "internal error" not in error[0], failed.stderr[-2000:]
    for part in ("max_locks_per_transaction = 10", f"{USER_TABLES} user table(s) per transaction"):
        assert part in error[0], error[0]
    assert "--table-group-size" in error[0] and "bxbatch resume" in error[0], error[0]

    validate = cli("validate", "--dsn", many_db, *ARGS, "--table-group-size", str(USER_TABLES))
    assert validate.returncode == ExitCode.LOCKS_EXHAUSTED, (validate.returncode, validate.stderr[-2000:])

    ok(cli("resume", "--dsn", many_db, *RUN_ARGS))
    assert "validation: passed" in ok(cli("validate", "--dsn", many_db, *ARGS)).stdout
    await assert_migrated_exactly(many_db)

"""SIGINT on the real CLI: the first stops after the chunks in flight (exit 75, ledger consistent), two exit at
once (75), and `bxbatch resume` finishes the job exactly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

import asyncpg

from bxbatch.errors import ExitCode
from tests.backfill_support import assert_no_duplicates, assert_same, expected_derived, snapshot, synth_template
from tests.e2e.clirun import run_cli, spawn_cli

SLOW_RUN = (
    "--log-format",
    "json",
    "--no-progress",
    "--concurrency",
    "2",
    "--target-chunk-ms",
    "20",
    "--initial-chunk-rows",
    "150",
    "--min-chunk-rows",
    "20",
    "--max-rows-per-second",
    "4000",
)


async def _done_chunks(conn: asyncpg.Connection) -> int:
    if not await conn.fetchval("SELECT to_regclass('bxbatch.chunk') IS NOT NULL"):
        return 0
    return int(await conn.fetchval("SELECT count(*) FROM bxbatch.chunk WHERE status = 'done'"))


async def _signal_when(proc: subprocess.Popen[str], conn: asyncpg.Connection, more_than: int, times: int) -> float:
    deadline = time.monotonic() + 60
    while await _done_chunks(conn) <= more_than:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    for _ in range(times):
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.05)
    return time.monotonic()


async def _ledger_consistent(conn: asyncpg.Connection) -> None:
    """What the done chunks say they wrote is exactly what is in the target tables, nothing twice."""
    assert await conn.fetchval("SELECT status FROM bxbatch.run ORDER BY id DESC LIMIT 1") in ("interrupted", "running")
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.chunk WHERE done_count > 1") == 0
    seeded = await conn.fetchval(
        "SELECT coalesce(sum(rows), 0) FROM bxbatch.chunk WHERE job = 'activity_seed' AND status = 'done'"
    )
    logged = await conn.fetchval("SELECT count(*) FROM database_activitylog WHERE action_type = 'row_created'")
    assert seeded == logged
    assert_no_duplicates(await snapshot(conn))


async def test_sigint_is_resumable_and_resume_finishes(pg_server: Any, db_factory: Any) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.02, 11))
    conn = await asyncpg.connect(dsn)
    try:
        # 1. one SIGINT: graceful stop
        proc = spawn_cli("run", "--dsn", dsn, *SLOW_RUN)
        await _signal_when(proc, conn, 3, times=1)
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == ExitCode.RESUMABLE, err[-3000:]
        assert "stopping after the chunks in flight" in err
        errors = [line for line in err.splitlines() if line.startswith("bxbatch: error:")]
        assert len(errors) == 1 and "SIGINT" in errors[0] and "Traceback" not in err
        await _ledger_consistent(conn)
        assert await conn.fetchval("SELECT status FROM bxbatch.run ORDER BY id DESC LIMIT 1") == "interrupted"
        first = await _done_chunks(conn)

        # 2. two SIGINTs while a chunk is stuck behind another session's lock: out at once, still consistent
        holder = await asyncpg.connect(dsn)
        try:
            held = holder.transaction()
            await held.start()
            # the resumed run goes on with the seeding (it runs first); once it has committed a chunk, the log
            # is locked, and the next seeding chunk waits behind the lock
            proc = spawn_cli("resume", "--dsn", dsn, *SLOW_RUN, "--lock-timeout-ms", "5000")
            await _signal_when(proc, conn, first, times=0)
            await holder.execute("LOCK TABLE database_activitylog IN ACCESS EXCLUSIVE MODE")
            deadline = time.monotonic() + 60
            while not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE NOT l.granted AND a.application_name LIKE 'bxbatch:worker%')"
            ):
                assert proc.poll() is None and time.monotonic() < deadline
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            await asyncio.sleep(0.5)
            assert proc.poll() is None  # the chunk in flight is still waiting: the graceful stop waits for it
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.to_thread(proc.communicate, timeout=30)
            assert time.monotonic() - sent < 1.5
            assert proc.returncode == ExitCode.RESUMABLE, err[-3000:]
            assert "second SIGINT: exiting now" in err
            await held.rollback()
        finally:
            await holder.close()
        await asyncio.sleep(0.3)  # the server notices the dropped connections and rolls their chunks back
        await _ledger_consistent(conn)
        assert await _done_chunks(conn) > first

        # 3. resume to the end: every phase, and the derived rows are what the base tables imply
        result = await asyncio.to_thread(
            run_cli, "resume", "--dsn", dsn, "--log-format", "json", "--no-progress", timeout=180
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "completed" in result.stdout
        actual = await snapshot(conn)
        assert_no_duplicates(actual)
        assert_same({k: actual[k] for k in ("enhanced_views", "permissions")}, await expected_derived(conn))
        status = run_cli("status", "--dsn", dsn)
        assert status.returncode == 0 and status.stdout.startswith("COMPLETED: run #")
    finally:
        await conn.close()

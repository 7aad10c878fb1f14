"""The real CLI killed with SIGKILL at many moments of a run and resumed each time; two processes on one run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bxbatch.errors import ExitCode
from bxbatch.ops.run import run_migration
from bxbatch.settings import Settings
from tests.backfill_support import (
    apply_set_based,
    assert_ledger_exact,
    assert_no_duplicates,
    assert_same,
    only_phases,
    snapshot,
    synth_template,
)
from tests.e2e.clirun import BXBATCH, cli_env

# Small chunks so that a small install gives a few hundred chunks to kill in the middle of.
CHUNK_ARGS = (
    "--concurrency",
    "2",
    "--target-chunk-ms",
    "10",
    "--initial-chunk-rows",
    "30",
    "--min-chunk-rows",
    "10",
    "--max-chunk-rows",
    "300",
    "--no-progress",
    "--log-format",
    "json",
)


def spawn(command: str, dsn: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`bxbatch <command>` in the background; ``extra`` options override CHUNK_ARGS (the last one wins)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [BXBATCH, command, "--dsn", dsn, *CHUNK_ARGS, *extra], stdout=out, stderr=subprocess.STDOUT, env=cli_env()
        )


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("bxbatch did not finish in time")
        await asyncio.sleep(0.05)
    return int(proc.returncode)


async def catalog(conn: asyncpg.Connection) -> dict[str, Any]:
    indexes = await conn.fetch(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relnamespace = 'public'::regnamespace"
    )
    constraints = await conn.fetch(
        "SELECT conname, convalidated FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
    )
    triggers = await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal")
    return {
        "indexes": sorted(map(tuple, indexes)),
        "constraints": sorted(map(tuple, constraints)),
        "triggers": triggers,
    }


async def ledger_has(conn: asyncpg.Connection, table: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))


Moment = Callable[[asyncpg.Connection, float], Awaitable[bool]]


def moments(total_chunks: int) -> list[tuple[str, Moment]]:
    """When to kill: startup, mid-schema, then spread over the backfill's chunks, the settle rounds, the indexes."""

    async def startup(_conn: asyncpg.Connection, spawned: float) -> bool:
        return time.monotonic() - spawned > 0.5

    async def ddl_files(conn: asyncpg.Connection, _spawned: float) -> bool:
        return (
            await ledger_has(conn, "bxbatch.ddl_file")
            and await conn.fetchval("SELECT count(*) FROM bxbatch.ddl_file") >= 4
        )

    def chunks_done(fraction: float) -> Moment:
        async def check(conn: asyncpg.Connection, _spawned: float) -> bool:
            if not await ledger_has(conn, "bxbatch.chunk"):
                return False
            done = await conn.fetchval("SELECT count(*) FROM bxbatch.chunk WHERE status = 'done'")
            return bool(done >= fraction * total_chunks)

        return check

    async def settling(conn: asyncpg.Connection, _spawned: float) -> bool:
        return await ledger_has(conn, "bxbatch.pass") and bool(
            await conn.fetchval("SELECT count(*) FROM bxbatch.pass WHERE round >= 1")
        )

    async def indexing(conn: asyncpg.Connection, _spawned: float) -> bool:
        return bool(
            await conn.fetchval("SELECT count(*) FROM bxbatch.phase WHERE name = 'indexes' AND status = 'running'")
        )

    fractions = (0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    return [
        ("startup", startup),
        ("schema", ddl_files),
        *[(f"chunks {int(f * 100)}%", chunks_done(f)) for f in fractions],
        ("settle", settling),
        ("indexes", indexing),
    ]


@pytest.mark.slow
async def test_sigkill_at_many_moments_then_resume(pg_server: Any, db_factory: Any, tmp_path: Path) -> None:
    template = await synth_template(pg_server, 0.03, 3, user_tables=60)
    reference, killed = await db_factory(template=template), await db_factory(template=template)

    assert await wait_exit(spawn("run", reference, tmp_path / "reference.log")) == 0
    ref = await asyncpg.connect(reference)
    conn = await asyncpg.connect(killed)
    try:
        total_chunks = int(await ref.fetchval("SELECT count(*) FROM bxbatch.chunk"))
        assert total_chunks > 100
        kills: list[str] = []
        command = "run"
        for name, predicate in moments(total_chunks):
            # `resume` once a run exists (a kill at start-up may come before the run's ledger row)
            if await ledger_has(conn, "bxbatch.run") and await conn.fetchval("SELECT count(*) FROM bxbatch.run"):
                command = "resume"
            spawned = time.monotonic()
            proc = spawn(command, killed, tmp_path / "killed.log")
            hit = False
            while proc.poll() is None:
                if await predicate(conn, spawned):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    hit = True
                    break
                await asyncio.sleep(0.01)
            if hit:
                kills.append(name)
                continue
            code = int(proc.returncode)
            if code == ExitCode.BUSY:
                await asyncio.sleep(1.0)  # the killed process's backend was still finishing a statement
                continue
            assert code == 0, (tmp_path / "killed.log").read_text()[-3000:]
            break
        else:
            for _attempt in range(5):
                code = await wait_exit(spawn("resume", killed, tmp_path / "killed.log"))
                if code != ExitCode.BUSY:
                    break
                await asyncio.sleep(1.0)
            assert code == 0, (tmp_path / "killed.log").read_text()[-3000:]
        print("killed at", kills)
        assert len(kills) >= 10, kills
        assert any(k.startswith("chunks") for k in kills)

        actual, expected = await snapshot(conn), await snapshot(ref)
        assert_no_duplicates(actual)
        assert_same(actual, expected)
        assert await catalog(conn) == await catalog(ref)
        runs = await conn.fetch("SELECT id, status FROM bxbatch.run")
        assert [r["status"] for r in runs] == ["completed"]
        await assert_ledger_exact(conn, runs[0]["id"])
    finally:
        await ref.close()
        await conn.close()


@pytest.mark.slow
async def test_two_processes_share_one_run(
    pg_server: Any, db_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = await synth_template(pg_server, 0.03, 3, user_tables=60)
    dsn, reference = await db_factory(template=template), await db_factory(template=template)
    conn = await asyncpg.connect(dsn)
    try:
        # Many tiny chunks: the backfill must outlast the second process's start-up.
        slow = ("--max-chunk-rows", "25", "--initial-chunk-rows", "20")
        first = spawn("run", dsn, tmp_path / "first.log", *slow)
        while not (
            await ledger_has(conn, "bxbatch.chunk") and await conn.fetchval("SELECT count(*) FROM bxbatch.chunk")
        ):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            await asyncio.sleep(0.01)
        second = spawn("run", dsn, tmp_path / "second.log", "--join", *slow)  # one owner; joiners say so
        seen: set[str] = set()
        stop_watching = asyncio.Event()

        async def watch_run_status() -> None:  # the shared run is never marked interrupted (issue 11, item 8)
            watcher = await asyncpg.connect(dsn)
            try:
                while not stop_watching.is_set():
                    seen.add(await watcher.fetchval("SELECT status FROM bxbatch.run ORDER BY id DESC LIMIT 1"))
                    await asyncio.sleep(0.02)
            finally:
                await watcher.close()

        watching = asyncio.ensure_future(watch_run_status())
        try:
            codes = [await wait_exit(first), await wait_exit(second)]
        finally:
            stop_watching.set()  # never cancel it mid-query: the connection would be left mid-operation
            await watching
        # Whoever loses the race for a DDL lock waits for the other and finishes with it: never exit 7.
        assert codes == [0, 0], (codes, (tmp_path / "second.log").read_text()[-2000:])
        assert seen <= {"running", "completed"}, seen
        runs = await conn.fetch("SELECT id, status FROM bxbatch.run")
        assert [r["status"] for r in runs] == ["completed"]
        await assert_ledger_exact(conn, runs[0]["id"])
        pids = await conn.fetch("SELECT split_part(worker, ':', 2) AS pid, count(*) AS n FROM bxbatch.chunk GROUP BY 1")
        assert len(pids) == 2, [dict(r) for r in pids]  # both processes did chunks of the same run
        workers = await conn.fetchval("SELECT count(DISTINCT pid) FROM bxbatch.worker WHERE run_id = $1", runs[0]["id"])
        assert workers == 2

        only_phases(monkeypatch, ("preflight", "schema", "triggers"))
        await run_migration(Settings(dsn=reference, progress=False))
        ref = await asyncpg.connect(reference)
        try:
            await apply_set_based(ref)
            expected = await snapshot(ref)
        finally:
            await ref.close()
        actual = await snapshot(conn)
        assert_no_duplicates(actual)
        assert_same(actual, expected)
    finally:
        await conn.close()

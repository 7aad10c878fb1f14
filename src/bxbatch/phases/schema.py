"""The DDL runner: applies a migration's ddl/ files in order, each once, recorded with its checksum.

A transactional file runs in one transaction together with its ledger row, so it is applied
entirely or not at all. A file that cannot run in a transaction (CREATE INDEX CONCURRENTLY,
VALIDATE CONSTRAINT by choice) records each statement as it completes and resumes after the
last one recorded. Every statement runs under lock_timeout and is retried with backoff, so DDL
never queues the application behind it for longer than the timeout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from bxbatch.db.idents import qualified
from bxbatch.db.render import set_local_timeouts
from bxbatch.db.retry import RetryCount, RetryPolicy, is_hopeless, is_retryable, needs_fix, retry
from bxbatch.db.sqlfiles import SqlFile, Statement
from bxbatch.errors import BxbatchError, ChangedFileError, SqlFileError
from bxbatch.ledger import ddl as ddl_ledger
from bxbatch.ledger import runs as ledger
from bxbatch.migrations.loader import Migration, load_migration
from bxbatch.settings import Settings


@dataclass
class FileResult:
    name: str
    status: str  # "applied" | "skipped"
    duration_ms: int
    statements: int
    retries: int = 0


async def check_checksums(conn: asyncpg.Connection, files: list[SqlFile]) -> dict[str, str]:
    """Refuse when an applied file was edited since. Returns applied file -> sha256."""
    applied = await ddl_ledger.applied_files(conn)
    for f in files:
        row = applied.get(f.name)
        if row is not None and row["sha256"] != f.sha256:
            raise ChangedFileError(
                f"ddl/{f.name} was changed after it was applied "
                f"(run #{row['run_id']}, {row['applied_at']:%Y-%m-%d %H:%M})",
                hint="restore the applied version and put the change in a new, higher-numbered file",
            )
    return {name: row["sha256"] for name, row in applied.items()}


def _statement_error(f: SqlFile, stmt: Statement, exc: asyncpg.PostgresError) -> BxbatchError:
    line = stmt.line
    position = getattr(exc, "position", None)
    if position:
        with contextlib.suppress(TypeError, ValueError):
            line += stmt.sql.count("\n", 0, int(position) - 1)
    message = getattr(exc, "message", None) or str(exc)
    if is_hopeless(exc):  # the statement is fine; the database lacks what it names (a dropped table, a privilege)
        return needs_fix(exc, f"applying ddl/{f.name}, line {line}")
    return SqlFileError(
        f"ddl/{f.name}, line {line}: {message}",
        hint="fix the statement and run again; this file was not recorded as applied",
    )


async def _execute_statement(conn: asyncpg.Connection, f: SqlFile, stmt: Statement) -> None:
    """Run one statement; a failure that retrying cannot cure becomes SqlFileError naming file and line."""
    try:
        await conn.execute(stmt.sql)
    except asyncpg.PostgresError as exc:
        if is_retryable(exc):
            raise
        raise _statement_error(f, stmt, exc) from exc


# A DDL statement (or file) waits at most lock_timeout, then backs off and runs again (db/retry.py).
DDL_RETRY = RetryPolicy(event="ddl_retry")


async def with_retry(op: Callable[[], Awaitable[Any]], settings: Settings, log: Any, what: str) -> int:
    """Run op through the retry loop with the DDL policy (--max-attempts, backoff). Returns the retries."""
    count = RetryCount()
    await retry(op, DDL_RETRY.for_settings(settings), log=log, fields={"what": what}, on_retry=count)
    return count.n


async def _set_timeouts(conn: asyncpg.Connection, settings: Settings, local: bool, *, for_index: bool = False) -> None:
    # A concurrent index build waits for every older transaction to finish; a lock_timeout
    # there would abort it and leave an INVALID index, so it waits (the index phase reports
    # who it waits for) and relies on statement_timeout = 0.
    lock_ms = 0 if for_index else settings.lock_timeout_ms
    stmt_ms = 0 if for_index else settings.statement_timeout_ms
    await set_local_timeouts(conn, is_local=local, lock=lock_ms, statement=stmt_ms)


async def _apply_transactional(
    conn: asyncpg.Connection, f: SqlFile, settings: Settings, run_id: int | None, log: Any
) -> FileResult:
    started = time.monotonic()

    async def attempt() -> None:
        async with conn.transaction():
            await _set_timeouts(conn, settings, local=True)
            for stmt in f.statements:
                await _execute_statement(conn, f, stmt)
            duration = int((time.monotonic() - started) * 1000)
            await ddl_ledger.record_file(conn, f, duration, run_id)

    retries = await with_retry(attempt, settings, log, f.name)
    return FileResult(f.name, "applied", int((time.monotonic() - started) * 1000), len(f.statements), retries)


async def _index_state(conn: asyncpg.Connection, schema: str, stmt: Statement) -> str | None:
    """For CREATE INDEX: 'valid', 'invalid' or None (absent)."""
    name = getattr(stmt.node, "idxname", None)
    if not name:
        return None
    row = await conn.fetchrow(
        "SELECT i.indisvalid, i.indisready FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = $1 AND c.relnamespace = to_regnamespace($2)",
        name,
        schema,
    )
    if row is None:
        return None
    return "valid" if row["indisvalid"] else "invalid"


async def _apply_statementwise(
    conn: asyncpg.Connection, f: SqlFile, settings: Settings, run_id: int | None, log: Any
) -> FileResult:
    schema = load_migration(settings.migration).schema
    started = time.monotonic()
    done = await ddl_ledger.applied_statements(conn, f.name)
    for sha in set(done.values()):
        if sha != f.sha256:
            raise ChangedFileError(
                f"ddl/{f.name} was changed after some of its statements were applied",
                hint="restore the applied version and put the change in a new, higher-numbered file",
            )
    retries = 0
    for idx, stmt in enumerate(f.statements):
        if idx in done:
            continue
        t0 = time.monotonic()
        if stmt.kind == "IndexStmt" and stmt.concurrent:
            state = await _index_state(conn, schema, stmt)
            if state == "invalid":
                # Left by an interrupted CREATE INDEX CONCURRENTLY: unusable, and IF NOT EXISTS
                # would silently keep it. Drop it and build again.
                log.warning("index_invalid_dropped", index=stmt.node.idxname, file=f.name)
                await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(schema, stmt.node.idxname)}")

        async def attempt(stmt: Statement = stmt, idx: int = idx, t0: float = t0) -> None:
            async def execute_and_record() -> None:
                await _execute_statement(conn, f, stmt)
                await ddl_ledger.record_statement(conn, f, idx, t0, run_id)

            if not stmt.concurrent:  # the statement and its ledger row commit together
                async with conn.transaction():
                    await _set_timeouts(conn, settings, local=True)
                    await execute_and_record()
                return
            await _set_timeouts(conn, settings, local=False, for_index=stmt.kind == "IndexStmt")
            try:
                await execute_and_record()
            finally:
                if not conn.is_closed():
                    await conn.execute("RESET lock_timeout; RESET statement_timeout")  # the session's own again

        retries += await with_retry(attempt, settings, log, f"{f.name}#{idx}")
        log.debug("ddl_statement_applied", file=f.name, statement=idx, kind=stmt.kind)
    duration = int((time.monotonic() - started) * 1000)
    await ddl_ledger.record_file(conn, f, duration, run_id)
    return FileResult(f.name, "applied", duration, len(f.statements), retries)


async def pending_files(conn: asyncpg.Connection, migration: Migration, phase: str | None = None) -> list[SqlFile]:
    """The migration's DDL files not yet applied (checksums of applied ones verified)."""
    files = migration.ddl_files(phase)
    applied = await check_checksums(conn, migration.ddl_files()) if await ledger.ledger_exists(conn) else {}
    return [f for f in files if f.name not in applied]


async def apply_phase(
    conn: asyncpg.Connection,
    settings: Settings,
    run_id: int | None,
    log: Any,
    phase: str = "schema",
    only: Callable[[SqlFile], bool] | None = None,
) -> list[FileResult]:
    """Apply every pending file of ``phase`` in order (those ``only`` accepts), holding the DDL advisory lock."""
    all_files = load_migration(
        settings.migration
    ).ddl_files()  # parse everything first: a syntax error anywhere stops before any change
    files = [f for f in all_files if f.phase == phase and (only is None or only(f))]
    results: list[FileResult] = []
    # within a run, a process sharing it may be applying the same files: wait for it, never exit 7
    async with ledger.advisory_lock(
        conn, ledger.LOCK_DDL, "applying DDL", wait_for_bxbatch=run_id is not None, log=log
    ):
        applied = await check_checksums(conn, all_files)
        for f in files:
            if f.name in applied:
                results.append(FileResult(f.name, "skipped", 0, len(f.statements)))
                continue
            log.debug(
                "ddl_file_started",
                file=f.name,
                statements=len(f.statements),
                transactional=f.transactional,
            )
            if f.transactional:
                result = await _apply_transactional(conn, f, settings, run_id, log)
            else:
                result = await _apply_statementwise(conn, f, settings, run_id, log)
            log.debug(
                "ddl_file_applied",
                file=f.name,
                duration_ms=result.duration_ms,
                retries=result.retries,
            )
            results.append(result)
    return results

"""Index phase: every CREATE INDEX CONCURRENTLY of the ``phase=indexes`` DDL files, watched by the monitor.

The DDL files stay the source of the statements (split and parsed by sqlfiles/pglast; the
IndexStmt gives the index and table names), and the ddl_statement/ddl_file ledger is kept as the
schema runner keeps it, so `plan` and `status` see the files as applied. On top of that:

* one build at a time per table (builds on different tables may overlap with
  ``--index-concurrency``), each on its own connection with ``maintenance_work_mem`` set;
* every build attempt is a row in ``bxbatch.index_build`` (skips and rebuilds too);
* an index left INVALID by an interrupted build is dropped concurrently and rebuilt, a valid
  one is skipped, and a build still running for a bxbatch process that died is adopted
  (watched to its end) rather than fought over;
* the monitor polls pg_stat_progress_create_index on a second connection and names blockers.

Timeouts: a CONCURRENTLY build runs with lock_timeout = 0 and statement_timeout = 0. Its
lock on the table (SHARE UPDATE EXCLUSIVE) does not conflict with reads or writes, and after
that it waits for older transactions through virtualxid locks; a lock_timeout there would abort
the build into an INVALID index that costs a drop and a full rebuild, so it waits instead and
the monitor names who it waits for. ``client_connection_check_interval`` (PostgreSQL 14+) makes
the server abort the build when bxbatch dies, so a killed run leaves an INVALID index for the
next run to rebuild, not an unobserved build.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg

from bxbatch.db.render import set_local_timeouts
from bxbatch.db.retry import Outcome, Retry, RetryPolicy, is_retryable, retry
from bxbatch.db.session import connect, qualified, server_version_num
from bxbatch.db.sqlfiles import SqlFile, Statement, queries
from bxbatch.errors import ChangedFileError, SqlFileError, UsageError
from bxbatch.ledger import ddl as ddl_ledger
from bxbatch.ledger import runs as ledger
from bxbatch.observe.monitor import IndexMonitor
from bxbatch.observe.monitor import Q as MQ
from bxbatch.phases import schema
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

Q = queries("indexes")

CONNECTION_CHECK_MS = 2000
# A build that failed for a retryable reason (a lost connection, a deadlock) is tried again (db/retry.py).
INDEX_RETRY = RetryPolicy(event="index_build_retry")


@dataclass(frozen=True)
class IndexTask:
    """One CREATE INDEX statement of a DDL file."""

    file: SqlFile
    idx: int
    stmt: Statement
    name: str
    table: str
    schema: str

    @property
    def key(self) -> str:
        return f"{self.file.name}#{self.idx}"

    @property
    def is_gin(self) -> bool:
        return str(getattr(self.stmt.node, "accessMethod", "") or "").lower() == "gin"


def index_tasks(files: list[SqlFile], default_schema: str) -> list[IndexTask]:
    """The index phase's statements; anything but a named CREATE INDEX CONCURRENTLY is refused."""
    tasks: list[IndexTask] = []
    for f in files:
        for idx, stmt in enumerate(f.statements):
            node = stmt.node
            if stmt.kind != "IndexStmt" or not getattr(node, "idxname", None):
                raise SqlFileError(
                    f"ddl/{f.name}, line {stmt.line}: the index phase runs only named CREATE INDEX statements",
                    hint="move other statements to a phase=schema file",
                )
            if not stmt.concurrent:
                raise SqlFileError(
                    f"ddl/{f.name}, line {stmt.line}: {node.idxname} is not built CONCURRENTLY",
                    hint="use CREATE INDEX CONCURRENTLY IF NOT EXISTS so that writes are never blocked",
                )
            rel = node.relation
            tasks.append(
                IndexTask(
                    file=f,
                    idx=idx,
                    stmt=stmt,
                    name=str(node.idxname),
                    table=str(rel.relname),
                    schema=str(rel.schemaname or default_schema),
                )
            )
    return tasks


@dataclass
class PhaseTally:
    built: int = 0
    rebuilt: int = 0
    skipped_valid: int = 0
    adopted: int = 0
    retries: int = 0
    waited_s: float = 0.0
    build_seconds: dict[str, float] = field(default_factory=dict)

    def as_detail(self) -> dict[str, Any]:
        slowest = max(self.build_seconds.items(), key=lambda kv: kv[1], default=None)
        return {
            "indexes_built": self.built + self.rebuilt,
            "rebuilt_invalid": self.rebuilt,
            "skipped_valid": self.skipped_valid,
            "adopted": self.adopted,
            "retries": self.retries,
            "waited_s": round(self.waited_s, 1),
            "slowest": f"{slowest[0]} {slowest[1]:.1f}s" if slowest else None,
        }


def build_memory(settings: Settings, task: IndexTask) -> tuple[str, str]:
    """(flag, maintenance_work_mem) for this build: GIN builds have their own (see DESIGN.md: measured
    on the activity log's GIN index, more memory than ~64MB makes the build slower, not faster)."""
    if task.is_gin:
        return "--gin-maintenance-work-mem", settings.gin_maintenance_work_mem
    return "--maintenance-work-mem", settings.maintenance_work_mem


async def set_build_memory(conn: asyncpg.Connection, flag: str, value: str) -> None:
    try:
        await conn.execute("SELECT set_config('maintenance_work_mem', $1, false)", value)
    except (asyncpg.InvalidParameterValueError, asyncpg.InvalidTextRepresentationError) as exc:
        raise UsageError(
            f"invalid {flag} {value!r}: {exc}",
            hint="use a PostgreSQL memory size such as 256MB or 1GB",
        ) from exc


async def prepare_build_session(conn: asyncpg.Connection, settings: Settings) -> None:
    """Session settings of a build connection: memory per the flag, no timeouts (see module doc)."""
    await set_build_memory(conn, "--maintenance-work-mem", settings.maintenance_work_mem)
    await set_local_timeouts(conn, is_local=False, lock=0, statement=0)
    if await server_version_num(conn) >= 140000:
        await conn.execute(
            "SELECT set_config('client_connection_check_interval', $1, false)", f"{CONNECTION_CHECK_MS}ms"
        )


class IndexPhase:
    """Runs the pending index statements for one run."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.log = ctx.log.bind(phase="indexes")
        self.tally = PhaseTally()

    async def _state(self, conn: asyncpg.Connection, task: IndexTask) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(Q["index_state"], task.name, task.schema)
        return row

    async def _insert_build(
        self, conn: asyncpg.Connection, task: IndexTask, action: str, status: str, attempt: int, pid: int | None
    ) -> int:
        size = await conn.fetchrow(Q["table_size"], task.table, task.schema)
        return await ddl_ledger.add_build(
            conn,
            self.ctx.run_id,
            task.file.name,
            task.idx,
            task.name,
            task.table,
            action,
            status,
            attempt,
            pid,
            self.settings.host,
            os.getpid(),
            build_memory(self.settings, task)[1],
            size["rows_estimate"] if size else None,
            size["bytes"] if size else None,
        )

    def _show_bar(self, rows_estimate: int | None, table_bytes: int | None) -> bool:
        if rows_estimate is not None and rows_estimate >= 0:
            return rows_estimate >= self.settings.index_bar_min_rows
        return (table_bytes or 0) >= 16 * 1024 * 1024  # never analyzed: judge by size

    async def _record_done(self, conn: asyncpg.Connection, task: IndexTask, started: float) -> None:
        await ddl_ledger.record_statement(conn, task.file, task.idx, started, self.ctx.run_id)

    async def _adopt(self, conn: asyncpg.Connection, task: IndexTask) -> None:
        """A build of this index is running in a backend we do not own (its bxbatch died): watch it end."""
        row = await conn.fetchrow(MQ["progress_for_index"], task.name, task.schema)
        if row is None:
            return
        pid = int(row["pid"])
        self.log.warning("index_build_adopted", index=task.name, backend_pid=pid)
        build_id = await self._insert_build(conn, task, "adopt", "running", 1, pid)
        started = time.monotonic()
        monitor = IndexMonitor(
            self.settings, self.log, index_name=task.name, table_name=task.table, show_bar=False, build_id=build_id
        )
        stop = anyio.Event()

        async def wait_gone() -> None:
            while True:  # a poller: until the adopted build is gone
                if await conn.fetchrow(MQ["progress_for_index"], task.name, task.schema) is None:
                    break
                await anyio.sleep(self.settings.monitor_interval_s)
            stop.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_gone)
            tg.start_soon(monitor.watch, None, pid, stop)
        self.tally.adopted += 1
        await ddl_ledger.finish_build(
            conn, build_id, "done", int((time.monotonic() - started) * 1000), None, None, None
        )

    async def build(self, conn: asyncpg.Connection, task: IndexTask) -> asyncpg.Connection:
        """Bring one index to valid (skip, adopt, drop+rebuild or build). Returns the connection to keep using."""
        started = time.monotonic()
        state = await self._state(conn, task)
        if state is not None and state["building"]:
            await self._adopt(conn, task)
            state = await self._state(conn, task)
        if state is not None and state["indisvalid"]:
            build_id = await self._insert_build(conn, task, "skip_valid", "skipped", 1, None)
            async with conn.transaction():
                await self._record_done(conn, task, started)
                await ddl_ledger.finish_build(conn, build_id, "skipped", 0, 0, None, None)
            self.tally.skipped_valid += 1
            self.log.debug("index_skipped", index=task.name, reason="already exists and is valid")
            return conn
        action = "build"
        attempts = 0
        lost = False  # the last attempt lost its connection: the next one takes a fresh one
        done_meanwhile = False

        async def attempt() -> None:
            nonlocal conn, state, action, attempts, done_meanwhile
            attempts += 1
            if attempts > 1:
                if lost or conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
                    conn = await connect(self.settings, role="index")
                    await prepare_build_session(conn, self.settings)
                state = await self._state(conn, task)
                if state is not None and state["building"]:  # our lost session's build still runs
                    await self._adopt(conn, task)
                    state = await self._state(conn, task)
                if state is not None and state["indisvalid"]:  # finished although we lost sight of it
                    async with conn.transaction():
                        await self._record_done(conn, task, started)
                    done_meanwhile = True
                    return
            if state is not None and not state["indisvalid"]:
                # Left INVALID by an interrupted build: unusable, and IF NOT EXISTS would keep it.
                self.log.warning("index_invalid_dropped", index=task.name, table=task.table)
                await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(task.schema, task.name)}")
                action = "rebuild"
            await self._build_once(conn, task, action, attempts)

        def retried(scheduled: Retry) -> None:
            nonlocal lost
            lost = scheduled.outcome is Outcome.RECONNECT
            self.tally.retries += 1

        policy = INDEX_RETRY.for_settings(self.settings)
        try:
            await retry(attempt, policy, log=self.log, fields={"index": task.name}, on_retry=retried)
        except asyncpg.PostgresError as exc:
            if not is_retryable(exc):
                raise schema._statement_error(task.file, task.stmt, exc) from exc
            raise
        if not done_meanwhile:
            if action == "rebuild":
                self.tally.rebuilt += 1
            else:
                self.tally.built += 1
        return conn

    async def _build_once(self, conn: asyncpg.Connection, task: IndexTask, action: str, attempt: int) -> None:
        pid = conn.get_server_pid()
        await set_build_memory(conn, *build_memory(self.settings, task))
        build_id = await self._insert_build(conn, task, action, "running", attempt, pid)
        size = await conn.fetchrow(Q["table_size"], task.table, task.schema)
        rows_estimate = int(size["rows_estimate"]) if size else None
        show_bar = self._show_bar(rows_estimate, int(size["bytes"]) if size else None)
        self.log.debug(
            "index_build_started",
            index=task.name,
            table=task.table,
            action=action,
            attempt=attempt,
            rows_estimate=rows_estimate,
            backend_pid=pid,
            maintenance_work_mem=build_memory(self.settings, task)[1],
        )
        monitor = IndexMonitor(
            self.settings, self.log, index_name=task.name, table_name=task.table, show_bar=show_bar, build_id=build_id
        )
        stop = anyio.Event()
        t0 = time.monotonic()
        error: BaseException | None = None

        async def run_build() -> None:
            nonlocal error
            try:
                await conn.execute(task.stmt.sql)
            except Exception as exc:
                error = exc
            finally:
                stop.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_build)
            tg.start_soon(monitor.watch, None, pid, stop)
        seconds = time.monotonic() - t0
        waited_ms = int(monitor.result.waited_s * 1000)
        self.tally.waited_s += monitor.result.waited_s
        if error is not None:
            with contextlib.suppress(Exception):
                ledger_conn = conn if not conn.is_closed() else await connect(self.settings, role="index")
                try:
                    await ddl_ledger.finish_build(
                        ledger_conn,
                        build_id,
                        "failed",
                        int(seconds * 1000),
                        waited_ms,
                        None,
                        f"{type(error).__name__}: {error}"[:2000],
                    )
                finally:
                    if ledger_conn is not conn:
                        await ledger_conn.close()
            raise error
        index_bytes = await conn.fetchval(Q["index_bytes"], task.name, task.schema)
        async with conn.transaction():
            await self._record_done(conn, task, t0)
            await ddl_ledger.finish_build(conn, build_id, "done", int(seconds * 1000), waited_ms, index_bytes, None)
        self.tally.build_seconds[task.name] = seconds
        self.log.debug(
            "index_built",
            index=task.name,
            table=task.table,
            seconds=round(seconds, 3),
            waited_s=round(monitor.result.waited_s, 1),
            samples=len(monitor.result.samples),
            index_bytes=index_bytes,
            blockers_seen=sorted(monitor.result.blockers_seen),
        )

    async def run_queue(self, tasks: list[IndexTask]) -> None:
        """The builds of one table, one after another, on a connection of their own."""
        conn = await connect(self.settings, role="index")
        try:
            await prepare_build_session(conn, self.settings)
            for task in tasks:
                conn = await self.build(conn, task)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()


async def pending_tasks(conn: asyncpg.Connection, files: list[SqlFile], schema_name: str) -> list[IndexTask]:
    """Index statements not yet recorded; refuses files changed since some of their statements ran."""
    applied = set(await ddl_ledger.applied_files(conn))
    pending: list[IndexTask] = []
    for task in index_tasks([f for f in files if f.name not in applied], schema_name):
        pending.append(task)
    done: dict[str, dict[int, str]] = {}
    for name in {t.file.name for t in pending}:
        done[name] = await ddl_ledger.applied_statements(conn, name)
        f = next(t.file for t in pending if t.file.name == name)
        if any(sha != f.sha256 for sha in done[name].values()):
            raise ChangedFileError(
                f"ddl/{name} was changed after some of its statements were applied",
                hint="restore the applied version and put the change in a new, higher-numbered file",
            )
    return [t for t in pending if t.idx not in done[t.file.name]]


async def run(ctx: RunContext) -> dict[str, Any]:
    all_files = ctx.migration.ddl_files()
    files = [f for f in all_files if f.phase == "indexes"]
    phase = IndexPhase(ctx)
    conn = ctx.conn
    async with ledger.advisory_lock(conn, ledger.LOCK_DDL, "applying DDL", wait_for_bxbatch=True, log=ctx.log):
        await schema.check_checksums(conn, all_files)
        for r in await ddl_ledger.abandon_builds(conn):
            phase.log.warning("index_build_abandoned", index=r["index_name"], backend_pid=r["backend_pid"])
        tasks = await pending_tasks(conn, files, ctx.profile.schema)
        queues: OrderedDict[tuple[str, str], list[IndexTask]] = OrderedDict()
        for t in tasks:
            queues.setdefault((t.schema, t.table), []).append(t)
        phase.log.debug("index_phase_plan", pending=len(tasks), tables=len(queues))
        limiter = anyio.CapacityLimiter(max(1, ctx.settings.index_concurrency))

        async def one_table(items: list[IndexTask]) -> None:
            async with limiter:
                await phase.run_queue(items)

        async with anyio.create_task_group() as tg:
            for items in queues.values():
                tg.start_soon(one_table, items)
        # A file is applied once every statement in it is: then plan/status count it as applied.
        applied = set(await ddl_ledger.applied_files(conn))
        for f in files:
            if f.name in applied:
                continue
            done = set(await ddl_ledger.applied_statements(conn, f.name))
            if done >= set(range(len(f.statements))):
                duration = await ddl_ledger.file_duration(conn, f.name)
                await ddl_ledger.record_file(conn, f, duration, ctx.run_id)
    detail = phase.tally.as_detail()
    # the builds the backfill phase started early (or an earlier attempt of this phase): "0 built" alone
    # would read as if the run had built no index
    detail["built_before"] = max(0, await ddl_ledger.builds_done(conn, ctx.run_id) - detail["indexes_built"])
    return detail

"""Index builds the backfill phase starts early: a backfill target's, as soon as its load and keys are done.

The activity log's GIN index is the longest single step of the Baserow migration (about half of the
run), and ``CREATE INDEX CONCURRENTLY`` builds of one table cannot overlap (``SHARE UPDATE
EXCLUSIVE`` conflicts with itself). So the log's builds start as soon as its seeding and keys are
done, one after another on a connection of their own, the GIN build last, while the settle rounds
run (DESIGN.md, "Index builds start inside the backfill phase"). Once every job's passes are done, the
index builds of the tables no job writes (the migration's new, empty tables) start too, on one more
connection, so the index phase finds nothing left to build while the log's GIN build holds the run.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg

from bxbatch.backfill.passes import analyze_target
from bxbatch.db.locks import cancel_autovacuum
from bxbatch.db.session import connect
from bxbatch.db.sqlfiles import queries
from bxbatch.ledger import control as control_ledger
from bxbatch.ledger import runs as ledger
from bxbatch.phases.context import RunContext
from bxbatch.phases.indexes import IndexPhase, IndexTask, pending_tasks, prepare_build_session

Q = queries("indexes")

OLD_TRANSACTION_S = 1.0  # an application transaction open longer than this defers the early builds
EARLY_LOCK_CLASS = ledger.LOCK_CLASS + 2  # session advisory lock per table whose indexes one process builds early


class EarlyBuilds:
    """The index builds of a backfill job's target, started by the backfill phase once every job's main
    and catch-up passes and the targets' keys are done, while the settle rounds run (the activity log's
    seven). Each table's builds run one after another on a connection of their own, exactly as the index
    phase runs them (ledger rows, monitor, INVALID leftovers rebuilt), GIN builds last, holding one of
    the engine's worker slots (``Throttle.borrow_slot``: the workers run one fewer meanwhile, and a build
    does not start while the throttle pauses). The index phase then finds them built. Only jobs that are
    not reconciled: the reconciled targets' indexes are small, and stay in the index phase. The table is
    ``ANALYZE``d before its first build (the reconciled targets are, before their reconcile passes)."""

    def __init__(self, ctx: RunContext, throttle: Any, tg: Any) -> None:
        self.ctx, self.throttle, self.tg = ctx, throttle, tg
        self.phase = IndexPhase(ctx)
        self.started: list[str] = []
        self._control_table: bool | None = None  # the ledger has the control row's table (read once)

    async def start(self, job: Any) -> None:
        if job.reconcile or not job.target or self.throttle.stopping:
            return
        try:
            conn = await connect(self.ctx.settings, role="index")
            try:
                tasks = await self._startable(conn, lambda t: t.table == job.target, job.target)
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.close()
                raise
        except Exception as exc:  # a head start only: the index phase builds whatever is missing
            self.phase.log.warning("early_index_builds_skipped", table=job.target, error=type(exc).__name__)
            return
        if not tasks:
            await conn.close()
            return
        self.started += [t.name for t in tasks]
        self.tg.start_soon(self._run, conn, tasks, name=f"early-indexes:{job.target}")

    async def start_others(self, targets: set[str]) -> None:
        """The index builds of the tables no backfill job writes (``targets``: the jobs' tables), started
        once every job's passes are done: one table after another, on a connection of their own, while the
        log's builds run. They were nearly all of the index phase's work (17 of its 18 builds in the Baserow
        expansion, on 6 empty tables, a connection each: 0.25-0.44 s after the log's GIN build)."""
        if self.throttle.stopping:
            return
        try:
            conn = await connect(self.ctx.settings, role="index")
            try:
                tasks = await self._startable(conn, lambda t: t.table not in targets, None)
            finally:
                await conn.close()
        except Exception as exc:  # a head start only, as for a target's builds
            self.phase.log.warning("early_index_builds_skipped", table=None, error=type(exc).__name__)
            return
        if not tasks:
            return
        queues: dict[str, list[IndexTask]] = {}
        for task in tasks:
            queues.setdefault(task.table, []).append(task)
        self.started += [t.name for t in tasks]
        self.tg.start_soon(self._run_tables, list(queues.values()), name="early-indexes:others")

    async def _startable(
        self, conn: asyncpg.Connection, wanted: Callable[[IndexTask], bool], table: str | None
    ) -> list[IndexTask]:
        """The pending builds ``wanted`` picks, GIN builds last (stable: the file's order otherwise; the
        longest, so a run stopped during one finds the table's btrees built); none when they must wait for
        the index phase."""
        files = self.ctx.migration.ddl_files("indexes")
        tasks = [t for t in await pending_tasks(conn, files, self.ctx.profile.schema) if wanted(t)]
        tasks.sort(key=lambda t: t.is_gin)
        if not tasks:
            return []
        # A transaction of the application open for a while: a CONCURRENTLY build would wait for it at
        # its end ("waiting for old snapshots") and hold the backfill phase with it. Leave the builds
        # to the index phase, which waits for such sessions in the open (status names them).
        old = await conn.fetchval(Q["old_transactions"], OLD_TRANSACTION_S)
        if old:
            self.phase.log.info("early_index_builds_deferred", table=table, old_transactions=old)
            return []
        if await self._held(conn):
            self.phase.log.info("early_index_builds_held", table=table)
            return []
        return tasks

    async def _held(self, conn: asyncpg.Connection) -> bool:
        """The operator holds the run before the index phase (`bxbatch hold-before indexes`): no build starts
        early (one already running finishes; the index phase, which waits for the release, builds the rest)."""
        if self._control_table is None:
            self._control_table = await control_ledger.control_table_present(conn)
        if not self._control_table:
            return False
        row = await control_ledger.control_row(conn, self.ctx.run_id)
        return row is not None and row["hold_before"] == "indexes"

    async def _run_tables(self, queues: list[list[IndexTask]]) -> None:
        for tasks in queues:
            if self.throttle.stopping:
                return
            try:
                conn = await connect(self.ctx.settings, role="index")
            except Exception as exc:
                self.phase.log.warning("early_index_builds_stopped", table=tasks[0].table, error=type(exc).__name__)
                return
            await self._run(conn, tasks, analyze=False)  # nothing loaded them: the cleanup phase analyses them

    async def _run(self, conn: asyncpg.Connection, tasks: list[IndexTask], analyze: bool = True) -> None:
        key = zlib.crc32(f"{tasks[0].schema}.{tasks[0].table}".encode()) & 0x7FFFFFFF
        borrowed = False
        try:
            # another process of the run building the same table's indexes: leave them to it
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", EARLY_LOCK_CLASS, key):
                return
            borrowed = await self.throttle.borrow_slot()
            if not borrowed:
                return
            self.phase.log.debug("early_index_builds", table=tasks[0].table, indexes=[t.name for t in tasks])
            # Statistics first: the table was empty when created and has just been loaded, and the
            # constraint and validate phases plan their scans of it on these (autovacuum may or may not
            # have got to it, and a CONCURRENTLY build makes it give up). An ANALYZE conflicts with the
            # builds' lock, so it goes before them, on the same connection, after cancelling an
            # autovacuum the load started there (the lock would wait deadlock_timeout for it). At the
            # server's statistics target: a tenth of the sample (target 10, 0.05 s instead of 0.3-0.6 s at
            # scale 1) made validation's per-table checks 0.6-0.8 s slower (DESIGN.md).
            schema, table = tasks[0].schema, tasks[0].table
            if analyze:
                await cancel_autovacuum(conn, schema, table, self.phase.log)
                await analyze_target(conn, schema, table, self.ctx.settings.lock_timeout_ms, self.phase.log)
            for i, task in enumerate(tasks):
                if self.throttle.stopping:
                    return
                if await self._held(conn):  # held since: the builds left wait in the index phase
                    self.phase.log.info("early_index_builds_held", table=table, left=len(tasks) - i)
                    return
                await prepare_build_session(conn, self.ctx.settings)
                conn = await self.phase.build(conn, task)
        except Exception as exc:
            # Only a head start: whatever stopped it (a terminated session past its retries, a lost
            # server), the index phase builds what is missing and rebuilds an INVALID leftover.
            self.phase.log.warning(
                "early_index_builds_stopped", table=tasks[0].table, error=f"{type(exc).__name__}: {exc}"[:300]
            )
        finally:
            if borrowed:
                self.throttle.return_slot()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5), contextlib.suppress(Exception):
                await conn.close()

"""The backfill engine's entry point: a warmed pool, the live-safety guard, an Engine and its pass sequence.

The path of one chunk: ``phases.backfill`` calls ``run_backfill_jobs``; ``passes.Sequencer`` picks
the pass; ``engine.Engine.run_pass`` creates it (``parts``, ``ledger.backfill``) and starts its
planner and workers; a worker runs ``worker.apply_chunk_transaction``: claim (``SKIP LOCKED``),
the job's chunk statement, ``finish_chunk``, commit, in one transaction on a pool connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import asyncpg

from bxbatch.backfill.engine import Engine
from bxbatch.backfill.parts import PartFinder
from bxbatch.backfill.passes import Sequencer
from bxbatch.backfill.worker import warm_connection
from bxbatch.db.session import create_pool
from bxbatch.ledger.backfill import BackfillLedger
from bxbatch.live.control import guard
from bxbatch.live.throttle import Throttle
from bxbatch.migrations.jobs import Job
from bxbatch.migrations.loader import load_migration
from bxbatch.migrations.profile import Profile
from bxbatch.settings import Settings


async def run_backfill_jobs(
    conn: asyncpg.Connection,
    settings: Settings,
    run_id: int,
    log: Any,
    *,
    jobs: list[Job] | None = None,
    throttle: Throttle | None = None,
    profile: Profile | None = None,
    install_missing: Callable[[], Awaitable[Any]] | None = None,
    history_counts: bool = True,
    before_settle: Callable[[Any, Job | None], Awaitable[Any]] | None = None,
    after_main: Callable[[Job], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """Run the backfill jobs of run ``run_id`` with ``settings.concurrency`` workers on a pool of that size."""
    throttle = throttle or Throttle(settings, log=log)
    size = max(1, int(getattr(throttle, "workers", throttle.max_concurrency)))
    pool = await create_pool(settings, size=size, role="worker")
    migration = load_migration(settings.migration)  # the one settings name: default jobs and profile
    jobs = list(jobs if jobs is not None else migration.jobs)
    profile = profile or migration.profile
    warm_jobs = [j for j in jobs if not j.per_user_table]
    try:
        # Open every connection now, not in the first chunks (they would pay the connection set-up),
        # and warm each one: a fresh backend's first claim costs ~10 ms of catalog loading and
        # statement preparation, on the critical path of the first chunks.
        held = [await pool.acquire() for _ in range(size)]
        try:
            async with anyio.create_task_group() as tg:
                for c in held:
                    tg.start_soon(warm_connection, c, settings, warm_jobs, profile)
        finally:
            for c in held:
                await pool.release(c)
        parts = PartFinder(
            BackfillLedger(conn, run_id), profile, install_missing=install_missing, history_counts=history_counts
        )
        engine = Engine(
            conn=conn,
            pool=pool,
            settings=settings,
            run_id=run_id,
            log=log,
            throttle=throttle,
            profile=profile,
            parts=parts,
        )
        keyed = frozenset(f.after for f in migration.ddl_files("backfill") if f.after is not None)
        sequencer = Sequencer(engine, before_settle=before_settle, after_main=after_main, keyed_jobs=keyed)
        async with guard(settings, run_id, throttle, log):  # health signals, control row, signals
            return await sequencer.run_jobs(jobs)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await pool.close()

"""Backfill phase: the migration's backfill jobs run by the chunk engine (see backfill/runner.py)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from bxbatch.backfill.runner import run_backfill_jobs
from bxbatch.db.locks import cancel_autovacuum
from bxbatch.db.retry import RetryPolicy, retry
from bxbatch.errors import CompletedWithFailures, Interrupted, LockBusy
from bxbatch.live.throttle import Throttle
from bxbatch.migrations.jobs import Job
from bxbatch.migrations.loader import load_migration
from bxbatch.phases import schema, triggers
from bxbatch.phases.context import RunContext
from bxbatch.phases.early import EarlyBuilds
from bxbatch.settings import Settings

# Another process of the run holds the DDL lock while it adds the same keys: wait for it (no limit, but
# stopping ends the wait), then find its files applied and skip them.
PARTNER_WAIT = RetryPolicy(retry_on=frozenset(), also=(LockBusy,), max_attempts=None, base_ms=500, max_ms=500)


async def add_target_keys(
    conn: Any,
    job: Job | None = None,
    *,
    settings: Settings,
    run_id: int | None,
    log: Any,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Apply ``phase=backfill`` DDL files: the foreign keys of the tables only bxbatch writes.

    Called by the engine with a ``job`` as soon as that job's main and catch-up passes are done,
    for the files that name it (``after=JOB``: the activity log's keys, ddl/051), and with none
    after every job's passes, before the settle rounds, for every file still pending (the
    Baserow expansion's ddl/050_backfill_target_keys.sql says why). With a job, an autovacuum
    its load started on its target is cancelled first: each ALTER would otherwise wait
    deadlock_timeout for PostgreSQL to do it. Another process of the same run may be applying
    them at the same moment: wait for it rather than fail. Returns the files applied.
    """
    if job is not None and job.target:
        await cancel_autovacuum(conn, load_migration(settings.migration).schema, job.target, log)
    only = None if job is None else (lambda f: f.after == job.name)
    try:
        results = await retry(
            partial(schema.apply_phase, conn, settings, run_id, log, phase="backfill", only=only),
            PARTNER_WAIT,
            stop=stopping,
        )
    except LockBusy:
        if stopping():
            raise Interrupted(
                "stopped while waiting for another process to add the backfill targets' keys",
                hint="run `bxbatch resume` to continue",
            ) from None
        raise
    return sum(1 for r in results if r.status == "applied")


async def run(ctx: RunContext) -> dict[str, Any]:
    throttle = getattr(ctx, "throttle", None) or Throttle(ctx.settings)
    async with anyio.create_task_group() as builds:
        early = EarlyBuilds(ctx, throttle, builds)
        detail = await run_backfill_jobs(
            ctx.conn,
            ctx.settings,
            ctx.run_id,
            ctx.log,
            jobs=list(ctx.migration.jobs),
            throttle=throttle,
            profile=ctx.profile,
            # user tables created since the trigger phase get the trigger (and a high-water mark)
            # before each activity catch-up pass, so their rows are seeded or logged, never both
            install_missing=partial(triggers.install_missing, ctx),
            before_settle=partial(
                add_target_keys,
                settings=ctx.settings,
                run_id=ctx.run_id,
                log=ctx.log,
                stopping=lambda: throttle.stopping,
            ),
            after_main=early.start,
        )
        # every job's passes are done: the index builds of the tables no job writes start too, while the
        # log's builds finish (the task group waits for them all)
        await early.start_others({job.target for job in ctx.migration.jobs if job.target})
    detail["early_index_builds"] = early.started
    ctx.log.debug(
        "backfill_summary",
        rows=detail["rows"],
        reconciled=detail["reconciled"],
        chunks=detail["chunks"],
        failed_chunks=detail["failed_chunks"],
        longest_chunk_ms=detail["longest_chunk_ms"],
        settle_rounds=detail["settle_rounds"],
    )
    if detail["failed_chunks"]:
        raise CompletedWithFailures(
            f"backfill: {detail['failed_chunks']} chunks failed (every other chunk is done)",
            hint="see `bxbatch status`; fix the cause and run `bxbatch resume` to retry them",
        )
    return detail

"""A benchmark entry point into the engine: one backfill job in a run of its own, its figures returned."""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from functools import partial
from typing import Any

from bxbatch.backfill.runner import run_backfill_jobs
from bxbatch.db.session import connect
from bxbatch.ledger import runs as ledger
from bxbatch.migrations.loader import load_migration
from bxbatch.observe.log import get_logger
from bxbatch.observe.observatory import observatory
from bxbatch.phases import triggers
from bxbatch.phases.backfill import add_target_keys
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings


async def run_job_once(
    dsn: str,
    job_name: str,
    concurrency: int,
    *,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Run one backfill job at ``concurrency`` on ``dsn`` in a run of its own; return its figures.

    For benchmarks: the caller prepares the data and empties the job's target table before each
    call (activity_seed seeds every user table again, whatever earlier runs did; the trigger
    phase is completed here if missing). Returns rows, seconds, rows/s, chunks, the longest chunk
    transaction and p50/p99 chunk durations, retries and the settle rounds.
    """
    settings = (settings or Settings()).with_(dsn=dsn, concurrency=concurrency, progress=False).validate()
    migration = load_migration(settings.migration)
    job = migration.job(job_name)
    log = get_logger("bxbatch.engine")
    conn = await connect(settings, role="bench")
    try:
        await ledger.ensure_schema(conn)
        run_id = int(
            await conn.fetchval(ledger.Q["insert_run"], f"bench:{job_name}", "bench", settings.host, os.getpid(), "{}")
        )
        ctx = RunContext(settings=settings, conn=conn, run_id=run_id, log=log, migration=migration)
        t0 = time.monotonic()
        # with settings.metrics_port set, observed as a run is: /metrics served, the time series sampled
        observing = observatory(settings, run_id, "bench", log) if settings.metrics_port is not None else nullcontext()
        async with observing as observed:
            if observed is not None:
                observed.phase("backfill", "running")
            detail = await run_backfill_jobs(
                conn,
                settings,
                run_id,
                log,
                jobs=[job],
                profile=migration.profile,
                install_missing=partial(triggers.install_missing, ctx) if job.per_user_table else None,
                history_counts=False,  # the caller emptied the target: seed every table again
                # the targets' foreign keys, as the backfill phase adds them (the caller may have
                # dropped them and their ledger rows to measure a run from the start)
                before_settle=partial(add_target_keys, settings=settings, run_id=run_id, log=log),
            )
        seconds = time.monotonic() - t0
        await ledger.set_run_status(conn, run_id, "completed")
    finally:
        await conn.close()
    figures = dict(detail["jobs"][job_name])
    figures.update(
        run_id=run_id,
        concurrency=concurrency,
        wall_seconds=round(seconds, 3),
        settle_rounds=detail["settle_rounds"],
    )
    return figures

"""Backfill phase: the jobs of ``sql/backfill`` run by the chunk engine (see engine/runner.py)."""

from __future__ import annotations

from functools import partial
from typing import Any

from ..context import RunContext
from ..engine.jobs import load_jobs
from ..engine.runner import run_backfill_jobs
from ..engine.throttle import Throttle
from ..errors import CompletedWithFailures
from . import triggers


async def run(ctx: RunContext) -> dict[str, Any]:
    throttle = getattr(ctx, "throttle", None) or Throttle(ctx.settings)
    detail = await run_backfill_jobs(
        ctx.conn,
        ctx.settings,
        ctx.run_id,
        ctx.log,
        jobs=list(load_jobs()),
        throttle=throttle,
        profile=ctx.profile,
        # user tables created since the trigger phase get the trigger (and a high-water mark)
        # before each activity catch-up pass, so their rows are seeded or logged, never both
        install_missing=partial(triggers.install_missing, ctx),
    )
    ctx.log.info(
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

"""The backfill part of `bxbatch status` and of run summaries: per job rows, rate, ETA, chunks and active workers.

Everything is read from the ledger, so it shows the work of every process sharing the run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from bxbatch.ledger.backfill import active_workers, job_totals, jobs_table_present
from bxbatch.ledger.control import held_seconds
from bxbatch.observe.log import human_duration

RATE_WINDOW_S = 30.0  # the rate (and so the ETA) is the throughput of the last 30 seconds
ACTIVE_WORKER_S = 10.0  # a worker whose heartbeat is older than this is not shown as active


def _rate(rows_done: int, recent_rows: int, first_done: datetime | None, now: datetime, held_s: float = 0.0) -> float:
    """Rows per second over the window, leaving out the time the throttle held the run back (paused, cut)."""
    if first_done is None:
        return 0.0
    window = min(RATE_WINDOW_S, (now - first_done).total_seconds())
    elapsed = window - min(held_s, window)
    rows = recent_rows if window >= RATE_WINDOW_S else rows_done
    if elapsed <= 0.5:
        # Held back all along: no unthrottled rate to extrapolate from. Paused, nothing moved and there is
        # no ETA; throttled for the whole window (a probe over its threshold, a rate limit), the pace the
        # run keeps is the one to go by.
        return rows / window if window > 0.5 else 0.0
    return rows / elapsed


async def backfill_status(conn: asyncpg.Connection, run_id: int | None) -> dict[str, Any]:
    """``{"backfill": {"jobs": [...], "workers": [...]}}`` for a run (empty when it has no jobs yet)."""
    if run_id is None or not await jobs_table_present(conn):
        return {"backfill": {"jobs": [], "workers": []}}
    now: datetime = await conn.fetchval("SELECT now()")
    held = await held_seconds(conn, run_id, RATE_WINDOW_S)  # the ETA leaves out paused / throttled time
    jobs = []
    for r in await job_totals(conn, run_id, RATE_WINDOW_S):
        rows = int(r["seed_rows"])
        expected = None if r["expected_rows"] is None else int(r["expected_rows"])
        running = r["status"] in ("running", "settling")
        rate = _rate(rows, int(r["recent_rows"]), r["first_done"], now, held) if running else 0.0
        left = max(0, expected - rows) if expected is not None else None
        eta = left / rate if running and rate > 0 and left is not None else None
        # over the job's whole life (first attempt's start to its end, or now), without held time: a
        # finished job's chunk timestamps alone would divide its rows by a few milliseconds
        end = r["finished_at"] or (r["last_done"] if not running else now)
        span = (end - r["started_at"]).total_seconds() if end is not None and r["started_at"] is not None else 0.0
        attempt_rate = rows / span if span >= 1.0 else 0.0
        if not running:
            rate = attempt_rate
        jobs.append(
            {
                "job": r["name"],
                "status": r["status"],
                "rows_done": rows,
                "rows_expected": expected,
                "percent": round(100.0 * rows / expected, 1) if expected else None,
                "rows_per_s": round(rate, 1),  # running: the last 30 s; finished: over the job
                "rows_per_s_recent": round(rate, 1) if running else 0.0,
                "rows_per_s_overall": round(attempt_rate, 1),
                "eta_s": None if eta is None else round(eta, 1),
                "reconciled_rows": int(r["rows_done"]) - rows,
                "chunks_done": int(r["chunks_done"]),
                "chunks_pending": int(r["chunks_pending"]),
                "chunks_failed": int(r["chunks_failed"]),
                "chunks_retried": int(r["chunks_retried"]),
                "retries": int(r["retries"]),
                "longest_chunk_ms": round(float(r["longest_ms"]), 1),
                "passes": int(r["passes"]),
                "started_at": r["started_at"],
                "finished_at": r["finished_at"],
            }
        )
    workers = [
        {
            "host": w["host"],
            "pid": w["pid"],
            "worker": w["idx"],
            "job": w["job"],
            "chunk": w["chunk_id"],
            "state": w["state"],
            "chunks_done": int(w["chunks_done"]),
            "rows_done": int(w["rows_done"]),
            "heartbeat_age_s": round(float(w["age_s"]), 1),
        }
        for w in await active_workers(conn, run_id, ACTIVE_WORKER_S)
    ]
    return {"backfill": {"jobs": jobs, "workers": workers}}


def render_backfill_lines(report: dict[str, Any]) -> list[str]:
    section = report.get("backfill") or {}
    jobs = section.get("jobs") or []
    if not jobs:
        return []
    lines = ["backfill:"]
    for j in jobs:
        expected = "?" if j["rows_expected"] is None else f"{j['rows_expected']:,}"
        pct = f" ({j['percent']:.1f}%)" if j["percent"] is not None else ""
        lines.append(
            f"  {j['job']:<15} {j['status']:<9} {j['rows_done']:,}/{expected} rows{pct}, "
            f"{j['rows_per_s']:,.0f} rows/s, ETA {human_duration(j['eta_s'])}; chunks {j['chunks_done']} done, "
            f"{j['chunks_pending']} pending, {j['chunks_failed']} failed, {j['chunks_retried']} retried; "
            f"longest {j['longest_chunk_ms']:.0f} ms"
            + (f"; reconciled {j['reconciled_rows']:,} rows" if j["reconciled_rows"] else "")
        )
    workers = section.get("workers") or []
    if workers:
        lines.append(f"  active workers: {len(workers)}")
        for w in workers:
            chunk = f" chunk {w['chunk']}" if w["chunk"] else ""
            lines.append(
                f"    {w['host']} pid {w['pid']} #{w['worker']}: {w['state']} {w['job'] or ''}{chunk} "
                f"({w['chunks_done']} chunks, {w['rows_done']:,} rows; heartbeat {w['heartbeat_age_s']}s ago)"
            )
    return lines

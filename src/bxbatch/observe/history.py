"""`bxbatch history`: every run (and rollback) recorded in this database, from the ledger and its archive.

The ledger (``bxbatch.run``) holds the runs since bxbatch last started here; a rollback archives
each run's summary and report data in ``bxbatch_history`` before it drops the ledger, and records
itself there too, so the history survives any number of rollbacks and new runs (run ids go on
from the archived ones).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from bxbatch.ledger import observations as obs


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _summary(r: asyncpg.Record) -> dict[str, Any]:
    hosts = sorted({h for h in (r["hosts"] or "").split(",") if h} | ({r["host"]} if r["host"] else set()))
    return {
        "kind": "run",
        "id": int(r["id"]),
        "command": r["command"],
        "status": r["status"],
        "start": _iso(r["started_at"]),
        "end": _iso(r["finished_at"]),
        "seconds": None if r["seconds"] is None else round(float(r["seconds"]), 1),
        "rows": int(r["rows"] or 0),
        "hosts": hosts,
        "version": r["bxbatch_version"],
        "error": r["error"],
        "archived": False,
    }


async def live_runs(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    if not await obs.relation_exists(conn, "bxbatch.run"):
        return []
    return [_summary(r) for r in await obs.history_runs(conn)]


async def collect_history(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Runs and rollbacks, oldest first."""
    entries: list[dict[str, Any]] = []
    live = await live_runs(conn)
    live_ids = {e["id"] for e in live}
    if await obs.relation_exists(conn, "bxbatch_history.run"):
        for r in await obs.archived_runs(conn):
            if int(r["id"]) in live_ids:
                continue
            summary = json.loads(r["summary"]) if isinstance(r["summary"], str) else dict(r["summary"])
            entries.append({**summary, "archived": True})
        for r in await obs.archived_rollbacks(conn):
            seconds = None
            if r["started_at"] is not None:
                seconds = round((r["finished_at"] - r["started_at"]).total_seconds(), 1)
            entries.append(
                {
                    "kind": "rollback",
                    "id": None,
                    "command": "rollback",
                    "status": "completed",
                    "start": _iso(r["started_at"] or r["finished_at"]),
                    "end": _iso(r["finished_at"]),
                    "seconds": seconds,
                    "rows": 0,
                    "hosts": [r["host"]],
                    "steps": int(r["steps"]),
                    "runs_archived": int(r["runs_archived"]),
                    "archived": True,
                }
            )
    if await obs.relation_exists(conn, "bxbatch.rollback_step"):
        steps = await obs.rollback_steps_done(conn)
        if steps is not None and steps["steps"]:
            entries.append(
                {
                    "kind": "rollback",
                    "id": None,
                    "command": "rollback",
                    "status": "interrupted",
                    "start": _iso(steps["first"]),
                    "end": _iso(steps["last"]),
                    "seconds": None,
                    "rows": 0,
                    "hosts": [],
                    "steps": int(steps["steps"]),
                    "archived": False,
                }
            )
    entries.extend(live)
    entries.sort(key=lambda e: e["start"] or "")
    return entries


def render_history(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no bxbatch run recorded in this database"
    lines = [f"{'run':>5}  {'command':<9} {'status':<24} {'started (UTC)':<19}  {'duration':>9}  {'rows':>12}  host"]
    for e in entries:
        ident = "-" if e["id"] is None else f"#{e['id']}"
        duration = "-" if e["seconds"] is None else f"{e['seconds']:.1f}s"
        status = e["status"]
        if e["kind"] == "rollback":
            status = f"{status} ({e.get('steps', 0)} steps)"
        start = (e["start"] or "")[:19].replace("T", " ")
        note = "  (archived)" if e["archived"] and e["kind"] == "run" else ""
        lines.append(
            f"{ident:>5}  {e['command']:<9} {status:<24} {start:<19}  {duration:>9}  {e['rows']:>12,}  "
            f"{','.join(e['hosts']) or '-'}{note}"
        )
    return "\n".join(lines)


async def archive_runs(conn: asyncpg.Connection) -> int:
    """A rollback step before the first ledger table is dropped: every run's summary and report data into
    ``bxbatch_history`` (same transaction as the step's ledger record). Returns the runs archived."""
    from bxbatch.observe.report import collect

    runs = await live_runs(conn)
    for summary in runs:
        data = await collect(conn, summary["id"])
        await obs.archive_run(conn, summary["id"], summary, data)
    return len(runs)


async def record_rollback(conn: asyncpg.Connection, host: str, started_at: datetime | None, steps_total: int) -> None:
    """In the rollback's last transaction (``DROP SCHEMA bxbatch``): the rollback itself, in the history."""
    await obs.archive_rollback(conn, host, started_at, steps_total)
